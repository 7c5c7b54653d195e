/*
 * servekit._linear: the class a linear model gives a row, in one call.
 *
 * servekit's fast path for scikit-learn's linear classifiers
 * (runtimes/sklearn_fast.py) predicts with argmax(rows @ x + bias). For one
 * row numpy spends most of its time dispatching (a BLAS dgemv, an add, an
 * argmax, each a few hundred ns to a few us); here the scores, the argmax and
 * a check that the answer cannot depend on rounding are one loop.
 *
 * linear_argmax(x, rows, bias, out) -> bool
 *
 *   x (n, f), rows (k, f), bias (k,): float64, C-contiguous; out (n,): intp,
 *   writable. out[i] = argmax_c(rows[c] . x[i] + bias[c]) (the first of equal
 *   maxima, as numpy's argmax) for k >= 2, and for k == 1 scikit-learn's
 *   binary rule, 1 if the score is > 0 else 0.
 *
 *   True only when every row's answer is CERTAIN: the same for any correctly
 *   rounded float64 evaluation of the scores (BLAS in any summation order,
 *   with or without FMA, numpy's gemv + add or gemm + add). Else False, and
 *   out's contents are unspecified: the caller then asks numpy.
 *
 * Why an answer is certain. A score is a dot product of f + 1 terms (the
 * bias times 1). Any evaluation of it in float64, in any order and with or
 * without fused multiply-adds, is within
 *
 *     gamma * S_c,   gamma = (f+1) u / (1 - (f+1) u),  u = 2^-53,
 *     S_c = sum_j |rows[c, j] x[j]| + |bias[c]|
 *
 * of the exact value (the standard forward error bound of a dot product; numpy's
 * separate add of the bias is one more rounding of the sum, which the f+1 term
 * covers). So two evaluations differ by at most 2 gamma S_c for a class, and
 * the winner w is the same for every evaluation when, for every other class c,
 *
 *     s_w - s_c > 2 gamma (S_w + S_c)        (k == 1: |s| > 2 gamma S).
 *
 * We demand four times that: each class gets the interval s_c +- e_c with
 *
 *     e_c = 8 gamma S_c + (f+1) 2^-1072,
 *
 * and the row is certain when the winner's lower end is above every other
 * class's upper end (k == 1: when 0 is outside the interval). The factor 4
 * absorbs the rounding of computing S_c itself (relative error below gamma),
 * of e_c and of the interval ends (a few u of values >= S_c, against a slack
 * of 6 gamma S_c >= 12 u S_c); the second term covers underflow, where a
 * product's rounding error is absolute (at most 2^-1075) rather than
 * relative, four times over. Exact ties (margin 0) are never certain, so the
 * tie rule never decides a True answer. Any NaN or infinity among the inputs
 * makes S_c or the score non-finite (|w| |x| is NaN or inf when x is, even
 * for w = 0, and likewise for w), and a non-finite score or S_c makes the
 * answer uncertain: no separate scan of the inputs is needed.
 *
 * The dot products and S_c run together (the loop is bound by loading rows,
 * not by arithmetic), several classes per pass over x. The CPU's widest
 * kernel is chosen at import: AVX-512F (8 doubles, 8 classes a pass), AVX2 +
 * FMA (4 doubles, 4 classes), else portable C; the vector ones are compiled
 * per function with target attributes, so the module itself runs on any
 * x86-64 (see setup.py). The tails of rows whose length is not a multiple of
 * the vector are read with masked loads, never past the end of a buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "buffers.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LINEAR_X86 1
#include <immintrin.h>
#endif

#define INLINE static inline __attribute__((always_inline))

/* One pass over x for `nb` classes: dot[c] = rows[c] . x, mag[c] = sum |rows[c, j] x[j]|.
 * `w` is the first of the nb rows (each f long). */
typedef void (*scores_fn)(const double *x, const double *w, Py_ssize_t f, Py_ssize_t k, double *dot,
                          double *mag);

/* -- portable C --------------------------------------------------------------------------------- */
INLINE void block_c(const double *x, const double *w, Py_ssize_t f, const int nb, double *dot, double *mag) {
    double d[4] = {0.0, 0.0, 0.0, 0.0}, m[4] = {0.0, 0.0, 0.0, 0.0};
    for (Py_ssize_t j = 0; j < f; j++) {
        double xj = x[j], ax = fabs(xj);
        for (int c = 0; c < nb; c++) {
            double wj = w[c * f + j];
            d[c] += wj * xj;
            m[c] += fabs(wj) * ax;
        }
    }
    for (int c = 0; c < nb; c++) {
        dot[c] = d[c];
        mag[c] = m[c];
    }
}

static void scores_c(const double *x, const double *w, Py_ssize_t f, Py_ssize_t k, double *dot, double *mag) {
    Py_ssize_t c = 0;
    for (; c + 4 <= k; c += 4) block_c(x, w + c * f, f, 4, dot + c, mag + c);
    for (; c < k; c++) block_c(x, w + c * f, f, 1, dot + c, mag + c);
}

#ifdef LINEAR_X86
/* -- AVX2 + FMA: 4 doubles a vector, up to 4 classes a pass ---------------------------------------
 * `lanes` independent accumulators per class (so at least 8 chains of FMAs in
 * flight overall: FMA latency 4, two ports) when a pass has few classes. */
#define AVX2 __attribute__((target("avx2,fma")))

INLINE AVX2 double sum256(__m256d v) {
    __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
    lo = _mm_add_pd(lo, hi);
    return _mm_cvtsd_f64(_mm_add_sd(lo, _mm_unpackhi_pd(lo, lo)));
}

INLINE AVX2 void block_avx2(const double *x, const double *w, Py_ssize_t f, const int nb, const int lanes,
                            double *dot, double *mag) {
    const __m256d sign = _mm256_set1_pd(-0.0);
    __m256d d[4][4], m[4][4];
    for (int c = 0; c < nb; c++)
        for (int l = 0; l < lanes; l++) d[c][l] = m[c][l] = _mm256_setzero_pd();
    Py_ssize_t j = 0;
    for (; j + 4 * lanes <= f; j += 4 * lanes)
        for (int l = 0; l < lanes; l++) {
            __m256d xv = _mm256_loadu_pd(x + j + 4 * l), ax = _mm256_andnot_pd(sign, xv);
            for (int c = 0; c < nb; c++) {
                __m256d wv = _mm256_loadu_pd(w + c * f + j + 4 * l);
                d[c][l] = _mm256_fmadd_pd(wv, xv, d[c][l]);
                m[c][l] = _mm256_fmadd_pd(_mm256_andnot_pd(sign, wv), ax, m[c][l]);
            }
        }
    for (; j < f; j += 4) { /* the last < 4 * lanes: whole vectors, then one masked */
        Py_ssize_t left = f - j;
        __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(left < 4 ? left : 4), _mm256_setr_epi64x(0, 1, 2, 3));
        __m256d xv = _mm256_maskload_pd(x + j, mask), ax = _mm256_andnot_pd(sign, xv);
        for (int c = 0; c < nb; c++) {
            __m256d wv = _mm256_maskload_pd(w + c * f + j, mask);
            d[c][0] = _mm256_fmadd_pd(wv, xv, d[c][0]);
            m[c][0] = _mm256_fmadd_pd(_mm256_andnot_pd(sign, wv), ax, m[c][0]);
        }
    }
    for (int c = 0; c < nb; c++) {
        for (int l = 1; l < lanes; l++) {
            d[c][0] = _mm256_add_pd(d[c][0], d[c][l]);
            m[c][0] = _mm256_add_pd(m[c][0], m[c][l]);
        }
        dot[c] = sum256(d[c][0]);
        mag[c] = sum256(m[c][0]);
    }
}

static AVX2 void scores_avx2(const double *x, const double *w, Py_ssize_t f, Py_ssize_t k, double *dot,
                             double *mag) {
    Py_ssize_t c = 0;
    for (; c + 4 <= k; c += 4) block_avx2(x, w + c * f, f, 4, 1, dot + c, mag + c);
    if (c + 2 <= k) {
        block_avx2(x, w + c * f, f, 2, 2, dot + c, mag + c);
        c += 2;
    }
    if (c < k) block_avx2(x, w + c * f, f, 1, 4, dot + c, mag + c);
}

/* -- AVX-512F: 8 doubles a vector, up to 8 classes a pass ----------------------------------------- */
#define AVX512 __attribute__((target("avx512f")))

INLINE AVX512 void block_avx512(const double *x, const double *w, Py_ssize_t f, const int nb, const int lanes,
                                double *dot, double *mag) {
    __m512d d[8][4], m[8][4];
    for (int c = 0; c < nb; c++)
        for (int l = 0; l < lanes; l++) d[c][l] = m[c][l] = _mm512_setzero_pd();
    Py_ssize_t j = 0;
    for (; j + 8 * lanes <= f; j += 8 * lanes)
        for (int l = 0; l < lanes; l++) {
            __m512d xv = _mm512_loadu_pd(x + j + 8 * l), ax = _mm512_abs_pd(xv);
            for (int c = 0; c < nb; c++) {
                __m512d wv = _mm512_loadu_pd(w + c * f + j + 8 * l);
                d[c][l] = _mm512_fmadd_pd(wv, xv, d[c][l]);
                m[c][l] = _mm512_fmadd_pd(_mm512_abs_pd(wv), ax, m[c][l]);
            }
        }
    for (; j < f; j += 8) { /* the last < 8 * lanes: whole vectors, then one masked */
        Py_ssize_t left = f - j;
        __mmask8 mask = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1u);
        __m512d xv = _mm512_maskz_loadu_pd(mask, x + j), ax = _mm512_abs_pd(xv);
        for (int c = 0; c < nb; c++) {
            __m512d wv = _mm512_maskz_loadu_pd(mask, w + c * f + j);
            d[c][0] = _mm512_fmadd_pd(wv, xv, d[c][0]);
            m[c][0] = _mm512_fmadd_pd(_mm512_abs_pd(wv), ax, m[c][0]);
        }
    }
    for (int c = 0; c < nb; c++) {
        for (int l = 1; l < lanes; l++) {
            d[c][0] = _mm512_add_pd(d[c][0], d[c][l]);
            m[c][0] = _mm512_add_pd(m[c][0], m[c][l]);
        }
        dot[c] = _mm512_reduce_add_pd(d[c][0]);
        mag[c] = _mm512_reduce_add_pd(m[c][0]);
    }
}

static AVX512 void scores_avx512(const double *x, const double *w, Py_ssize_t f, Py_ssize_t k, double *dot,
                                 double *mag) {
    Py_ssize_t c = 0;
    for (; c + 8 <= k; c += 8) block_avx512(x, w + c * f, f, 8, 1, dot + c, mag + c);
    if (c + 4 <= k) {
        block_avx512(x, w + c * f, f, 4, 1, dot + c, mag + c);
        c += 4;
    }
    if (c + 2 <= k) {
        block_avx512(x, w + c * f, f, 2, 2, dot + c, mag + c);
        c += 2;
    }
    if (c < k) block_avx512(x, w + c * f, f, 1, 4, dot + c, mag + c);
}
#endif /* LINEAR_X86 */

typedef struct {
    const char *name;
    scores_fn scores;
    int usable;
} kernel_t;

static kernel_t KERNELS[] = {
#ifdef LINEAR_X86
    {"avx512", scores_avx512, 0},
    {"avx2", scores_avx2, 0},
#endif
    {"c", scores_c, 1},
};
#define N_KERNELS ((int)(sizeof KERNELS / sizeof KERNELS[0]))

static const kernel_t *chosen = &KERNELS[N_KERNELS - 1];

/* -- arguments ---------------------------------------------------------------------------------- */
/* Rows times classes times columns above which the GIL goes to other threads
 * (about 100 us of work): for one row releasing it would cost more than the loop. */
#define BIG_PRODUCT 2000000.0
/* Classes whose scores fit on the stack; more take the heap. */
#define STACK_CLASSES 64

/* The answer for one row from its classes' dot products and magnitudes (both
 * overwritten: the scores and the intervals' half-widths); 1 when certain. */
static int decide(double *score, double *half, const double *bias, Py_ssize_t k, double eight_gamma, double tiny,
                  Py_ssize_t *out) {
    int finite = 1;
    Py_ssize_t best = 0;
    for (Py_ssize_t c = 0; c < k; c++) {
        double s = score[c] + bias[c];
        double big = half[c] + fabs(bias[c]);
        finite &= isfinite(s) && isfinite(big);
        score[c] = s;
        half[c] = eight_gamma * big + tiny;
        if (s > score[best]) best = c; /* strictly: the first of equal maxima */
    }
    if (k == 1) {
        *out = score[0] > 0.0;
        return finite && fabs(score[0]) > half[0];
    }
    *out = best;
    if (!finite) return 0;
    double low = score[best] - half[best];
    for (Py_ssize_t c = 0; c < k; c++)
        if (c != best && !(low > score[c] + half[c])) return 0;
    return 1;
}

static PyObject *py_linear_argmax(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "linear_argmax() takes exactly 4 arguments (%zd given)", nargs);
        return NULL;
    }
    arg_t args[4];
    memset(args, 0, sizeof args);
    if (take(a[0], &args[0], "x", "d", 8, 2, 0) < 0 || take(a[1], &args[1], "rows", "d", 8, 2, 0) < 0 ||
        take(a[2], &args[2], "bias", "d", 8, 1, 0) < 0 || take(a[3], &args[3], "out", "ilqn", (Py_ssize_t)sizeof(Py_ssize_t), 1, 1) < 0) {
        release(args, 4);
        return NULL;
    }
    Py_ssize_t n = args[0].view.shape[0], f = args[0].view.shape[1], k = args[1].view.shape[0];
    if (args[1].view.shape[1] != f || args[2].view.shape[0] != k || args[3].view.shape[0] != n || k < 1) {
        release(args, 4);
        PyErr_SetString(PyExc_ValueError,
                        "linear_argmax: expected x (n, f), rows (k, f), bias (k,) and out (n,) with k >= 1");
        return NULL;
    }
    double stack[2 * STACK_CLASSES], *buffer = stack;
    if (k > STACK_CLASSES && (buffer = PyMem_Malloc(2 * (size_t)k * sizeof(double))) == NULL) {
        release(args, 4);
        return PyErr_NoMemory();
    }
    const double *x = args[0].view.buf, *w = args[1].view.buf, *bias = args[2].view.buf;
    Py_ssize_t *out = args[3].view.buf; /* intp: numpy's index type is Py_ssize_t's size */
    const double u = 0x1p-53, terms = (double)f + 1.0;
    const double eight_gamma = 8.0 * (terms * u / (1.0 - terms * u)), tiny = terms * 0x1p-1072;
    scores_fn scores = chosen->scores;
    int certain = 1;
    PyThreadState *saved = (double)n * (double)k * (double)f > BIG_PRODUCT ? PyEval_SaveThread() : NULL;
    for (Py_ssize_t i = 0; i < n && certain; i++) {
        scores(x + i * f, w, f, k, buffer, buffer + k);
        certain = decide(buffer, buffer + k, bias, k, eight_gamma, tiny, out + i);
    }
    if (saved != NULL) PyEval_RestoreThread(saved);
    if (buffer != stack) PyMem_Free(buffer);
    release(args, 4);
    return PyBool_FromLong(certain);
}

/* kernels() -> the names of the kernels this CPU runs, widest first (tests run each). */
static PyObject *py_kernels(PyObject *self, PyObject *unused) {
    PyObject *names = PyList_New(0);
    if (names == NULL) return NULL;
    for (int i = 0; i < N_KERNELS; i++) {
        if (!KERNELS[i].usable) continue;
        PyObject *name = PyUnicode_FromString(KERNELS[i].name);
        if (name == NULL || PyList_Append(names, name) < 0) {
            Py_XDECREF(name);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(name);
    }
    PyObject *tuple = PyList_AsTuple(names);
    Py_DECREF(names);
    return tuple;
}

/* use_kernel(name) -> the name of the kernel used until now; the new one must be in kernels(). */
static PyObject *py_use_kernel(PyObject *self, PyObject *name) {
    const char *wanted = PyUnicode_AsUTF8(name);
    if (wanted == NULL) return NULL;
    for (int i = 0; i < N_KERNELS; i++)
        if (KERNELS[i].usable && strcmp(KERNELS[i].name, wanted) == 0) {
            const char *before = chosen->name;
            chosen = &KERNELS[i];
            return PyUnicode_FromString(before);
        }
    PyErr_Format(PyExc_ValueError, "no kernel %R on this CPU", name);
    return NULL;
}

static PyMethodDef METHODS[] = {
    {"linear_argmax", (PyCFunction)(void (*)(void))py_linear_argmax, METH_FASTCALL,
     "linear_argmax(x, rows, bias, out, /) -> whether out holds the certain argmax of each row (see the source)"},
    {"kernels", py_kernels, METH_NOARGS, "kernels() -> the kernels this CPU runs, widest first"},
    {"use_kernel", py_use_kernel, METH_O, "use_kernel(name) -> the kernel used until now"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_linear", "The class a linear model gives a row, in one call.", -1, METHODS,
};

PyMODINIT_FUNC PyInit__linear(void) {
#ifdef LINEAR_X86
    /* checks the OS saves the registers too (XCR0), not only the CPU's bits */
    __builtin_cpu_init();
    KERNELS[0].usable = __builtin_cpu_supports("avx512f");
    KERNELS[1].usable = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    for (int i = 0; i < N_KERNELS; i++)
        if (KERNELS[i].usable) {
            chosen = &KERNELS[i];
            break;
        }
    return PyModule_Create(&MODULE);
}
