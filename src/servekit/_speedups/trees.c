/*
 * servekit._trees: what rows reach in flattened tree ensembles.
 *
 * servekit's fast paths for scikit-learn forests and XGBoost boosters
 * (runtimes/sklearn_fast.py, runtimes/xgboost_fast.py) hold every tree of a
 * model as flat node arrays in which a leaf points to itself, so walking
 * `depth` steps from each root lands on each tree's leaf. With numpy that walk
 * is several array operations per level, each a few microseconds even for one
 * row; here it is one loop of compares and loads.
 *
 * The two rules are exactly the numpy code's (which the model's own library
 * checked on probe rows when it loaded):
 *   forest_mean:     left when (double)x[f] <= threshold (float64 thresholds),
 *                    so a NaN goes right; then the leaves' values averaged;
 *   booster_margins: child 2 * node + (x[f] >= threshold) (float32), so a
 *                    NaN goes left; then each leaf's value added to its group.
 * Every node and feature index is checked before it is used: arrays that do
 * not describe trees raise ValueError, never read outside a buffer.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    Py_buffer view;
    int held;
} arg_t;

static void release(arg_t *args, int n) {
    for (int i = 0; i < n; i++) {
        if (args[i].held) PyBuffer_Release(&args[i].view);
        args[i].held = 0;
    }
}

/* A C-contiguous buffer of `ndim` dimensions whose items are one of `formats`,
 * `itemsize` bytes each (intp is 'l', 'q' or 'n' depending on the platform). */
static int take(PyObject *object, arg_t *arg, const char *what, const char *formats, Py_ssize_t itemsize,
                int ndim, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, &arg->view, flags) < 0) return -1;
    arg->held = 1;
    const char *format = arg->view.format ? arg->view.format : "B";
    if (*format == '=' || *format == '<' || *format == '@') format++;
    if (arg->view.itemsize != itemsize || strlen(format) != 1 || strchr(formats, *format) == NULL ||
        arg->view.ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected a %d-D array of %zd-byte items (%s)", what, ndim, itemsize,
                     formats);
        return -1;
    }
    return 0;
}

#define INTP "lqn"
#define BIG_WALK 200000.0

static PyObject *bad_trees(void) {
    PyErr_SetString(PyExc_ValueError, "the node arrays do not describe trees over these columns");
    return NULL;
}

/*
 * forest_mean(x, feature, threshold, left, right, roots, value, depth, out) -> None
 *
 * The mean over the trees of the value (a float64 row of `outputs`) of the leaf
 * each reaches by scikit-learn's rule: summed tree by tree in order, then
 * divided by the number of trees, as scikit-learn's forests average.
 */
static PyObject *py_forest_mean(PyObject *self, PyObject *args_in) {
    PyObject *x, *feature, *threshold, *left, *right, *roots, *value, *out;
    int depth;
    if (!PyArg_ParseTuple(args_in, "OOOOOOOiO", &x, &feature, &threshold, &left, &right, &roots, &value, &depth,
                          &out))
        return NULL;
    arg_t args[8];
    memset(args, 0, sizeof args);
    if (take(x, &args[0], "x", "f", 4, 2, 0) < 0 || take(roots, &args[1], "roots", INTP, 8, 1, 0) < 0 ||
        take(out, &args[2], "out", "d", 8, 2, 1) < 0 || take(feature, &args[3], "feature", INTP, 8, 1, 0) < 0 ||
        take(threshold, &args[4], "threshold", "d", 8, 1, 0) < 0 ||
        take(left, &args[5], "left", INTP, 8, 1, 0) < 0 || take(right, &args[6], "right", INTP, 8, 1, 0) < 0 ||
        take(value, &args[7], "value", "d", 8, 2, 0) < 0) {
        release(args, 8);
        return NULL;
    }
    const float *xs = args[0].view.buf;
    Py_ssize_t rows = args[0].view.shape[0], columns = args[0].view.shape[1];
    const int64_t *tree_roots = args[1].view.buf;
    Py_ssize_t trees = args[1].view.shape[0];
    double *means = args[2].view.buf;
    Py_ssize_t nodes = args[3].view.shape[0], outputs = args[7].view.shape[1];
    if (args[4].view.shape[0] != nodes || args[5].view.shape[0] != nodes || args[6].view.shape[0] != nodes ||
        args[7].view.shape[0] != nodes || depth < 0 || trees < 1 || args[2].view.shape[0] != rows ||
        args[2].view.shape[1] != outputs) {
        release(args, 8);
        return bad_trees();
    }
    const int64_t *feat = args[3].view.buf, *lo = args[5].view.buf, *hi = args[6].view.buf;
    const double *thr = args[4].view.buf, *values = args[7].view.buf;
    int ok = 1;
    PyThreadState *saved = (double)rows * (double)trees * depth > BIG_WALK ? PyEval_SaveThread() : NULL;
    for (Py_ssize_t r = 0; r < rows && ok; r++) {
        const float *row = xs + r * columns;
        double *mean = means + r * outputs;
        for (Py_ssize_t o = 0; o < outputs; o++) mean[o] = 0.0;
        for (Py_ssize_t t = 0; t < trees; t++) {
            int64_t node = tree_roots[t];
            for (int d = 0; d < depth; d++) {
                if ((uint64_t)node >= (uint64_t)nodes || (uint64_t)feat[node] >= (uint64_t)columns) {
                    ok = 0;
                    break;
                }
                node = (double)row[feat[node]] <= thr[node] ? lo[node] : hi[node];
            }
            if (!ok || (uint64_t)node >= (uint64_t)nodes) {
                ok = 0;
                break;
            }
            const double *leaf = values + node * outputs;
            for (Py_ssize_t o = 0; o < outputs; o++) mean[o] += leaf[o];
        }
        for (Py_ssize_t o = 0; o < outputs && ok; o++) mean[o] /= (double)trees;
    }
    if (saved != NULL) PyEval_RestoreThread(saved);
    release(args, 8);
    if (!ok) return bad_trees();
    Py_RETURN_NONE;
}

/*
 * booster_margins(x, feature, threshold, children, roots, value, base, depth, out) -> None
 *
 * XGBoost's margins: tree t (round t / groups, group t % groups) adds the
 * float32 value of the leaf the row reaches to its group's margin, which
 * starts at base[group]; the adds are float32 and in round order, as XGBoost
 * sums them (and as numpy's float32 cumsum over the rounds does).
 */
static PyObject *py_booster_margins(PyObject *self, PyObject *args_in) {
    PyObject *x, *feature, *threshold, *children, *roots, *value, *base, *out;
    int depth;
    if (!PyArg_ParseTuple(args_in, "OOOOOOOiO", &x, &feature, &threshold, &children, &roots, &value, &base,
                          &depth, &out))
        return NULL;
    arg_t args[8];
    memset(args, 0, sizeof args);
    if (take(x, &args[0], "x", "f", 4, 2, 0) < 0 || take(roots, &args[1], "roots", INTP, 8, 1, 0) < 0 ||
        take(out, &args[2], "out", "f", 4, 2, 1) < 0 || take(feature, &args[3], "feature", INTP, 8, 1, 0) < 0 ||
        take(threshold, &args[4], "threshold", "f", 4, 1, 0) < 0 ||
        take(children, &args[5], "children", INTP, 8, 1, 0) < 0 ||
        take(value, &args[6], "value", "f", 4, 1, 0) < 0 || take(base, &args[7], "base", "f", 4, 1, 0) < 0) {
        release(args, 8);
        return NULL;
    }
    const float *xs = args[0].view.buf;
    Py_ssize_t rows = args[0].view.shape[0], columns = args[0].view.shape[1];
    const int64_t *tree_roots = args[1].view.buf;
    Py_ssize_t trees = args[1].view.shape[0];
    float *margins = args[2].view.buf;
    Py_ssize_t groups = args[7].view.shape[0];
    Py_ssize_t nodes = args[3].view.shape[0];
    if (args[4].view.shape[0] != nodes || args[5].view.shape[0] != 2 * nodes || args[6].view.shape[0] != nodes ||
        depth < 0 || groups < 1 || trees % groups || args[2].view.shape[0] != rows ||
        args[2].view.shape[1] != groups) {
        release(args, 8);
        return bad_trees();
    }
    const int64_t *feat = args[3].view.buf, *kids = args[5].view.buf;
    const float *thr = args[4].view.buf, *leaf_value = args[6].view.buf, *start = args[7].view.buf;
    int ok = 1;
    PyThreadState *saved = (double)rows * (double)trees * depth > BIG_WALK ? PyEval_SaveThread() : NULL;
    for (Py_ssize_t r = 0; r < rows && ok; r++) {
        const float *row = xs + r * columns;
        float *margin = margins + r * groups;
        for (Py_ssize_t g = 0; g < groups; g++) margin[g] = start[g];
        for (Py_ssize_t t = 0; t < trees; t++) {
            int64_t node = tree_roots[t];
            for (int d = 0; d < depth; d++) {
                if ((uint64_t)node >= (uint64_t)nodes || (uint64_t)feat[node] >= (uint64_t)columns) {
                    ok = 0;
                    break;
                }
                node = kids[2 * node + (row[feat[node]] >= thr[node])];
            }
            if (!ok || (uint64_t)node >= (uint64_t)nodes) {
                ok = 0;
                break;
            }
            margin[t % groups] += leaf_value[node];
        }
    }
    if (saved != NULL) PyEval_RestoreThread(saved);
    release(args, 8);
    if (!ok) return bad_trees();
    Py_RETURN_NONE;
}

static PyMethodDef METHODS[] = {
    {"forest_mean", py_forest_mean, METH_VARARGS,
     "forest_mean(x, feature, threshold, left, right, roots, value, depth, out): the trees' mean value"},
    {"booster_margins", py_booster_margins, METH_VARARGS,
     "booster_margins(x, feature, threshold, children, roots, value, base, depth, out): XGBoost's sums"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_trees", "What rows reach in flattened tree ensembles.", -1, METHODS,
};

PyMODINIT_FUNC PyInit__trees(void) { return PyModule_Create(&MODULE); }
