/*
 * servekit._trees: what rows reach in flattened tree ensembles.
 *
 * servekit's fast paths for scikit-learn forests and XGBoost boosters
 * (runtimes/sklearn_fast.py, runtimes/xgboost_fast.py) hold every tree of a
 * model as flat node arrays in which a leaf points to itself, so walking
 * `depth` steps from each root lands on each tree's leaf. With numpy that walk
 * is several array operations per level, each a few microseconds even for one
 * row; here it is one loop of compares and loads, over several trees at once
 * (see "lanes" below), whose leaves' values are then summed tree by tree.
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
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "buffers.h"

#define INTP "lqn"
#define BIG_WALK 200000.0

static PyObject *bad_trees(void) {
    PyErr_SetString(PyExc_ValueError, "the node arrays do not describe trees over these columns");
    return NULL;
}

/* What both walks take: rows x (rows, columns) float32; one root per tree;
 * per node a feature index and a threshold; and the output, one row per row. */
typedef struct {
    arg_t args[8];
    const float *x;
    Py_ssize_t rows, columns, trees, nodes;
    const int64_t *roots, *feature;
    const void *threshold;
    void *out;
} walk_t;

/* Takes x, roots, out (2-D, `out_format`), feature and threshold (`threshold_format`)
 * into args[0..4]; the caller takes the rest into args[5..7]. */
static int take_walk(walk_t *w, PyObject *x, PyObject *roots, PyObject *out, const char *out_format,
                     Py_ssize_t out_size, PyObject *feature, PyObject *threshold, const char *threshold_format,
                     Py_ssize_t threshold_size) {
    memset(w->args, 0, sizeof w->args);
    if (take(x, &w->args[0], "x", "f", 4, 2, 0) < 0 || take(roots, &w->args[1], "roots", INTP, 8, 1, 0) < 0 ||
        take(out, &w->args[2], "out", out_format, out_size, 2, 1) < 0 ||
        take(feature, &w->args[3], "feature", INTP, 8, 1, 0) < 0 ||
        take(threshold, &w->args[4], "threshold", threshold_format, threshold_size, 1, 0) < 0)
        return -1;
    w->x = w->args[0].view.buf;
    w->rows = w->args[0].view.shape[0];
    w->columns = w->args[0].view.shape[1];
    w->roots = w->args[1].view.buf;
    w->trees = w->args[1].view.shape[0];
    w->out = w->args[2].view.buf;
    w->feature = w->args[3].view.buf;
    w->nodes = w->args[3].view.shape[0];
    w->threshold = w->args[4].view.buf;
    if (w->args[4].view.shape[0] != w->nodes || w->args[2].view.shape[0] != w->rows || w->trees < 1) {
        bad_trees();
        return -1;
    }
    return 0;
}

/*
 * The walks go several trees at a time ("lanes"), one level of each in turn:
 * a tree's walk is a chain of dependent loads (node -> feature -> x -> child),
 * and the chains of the lanes overlap where a lone chain would wait on memory.
 * Leaves point to themselves, so `depth` steps land every lane on its leaf
 * and the loop is regular. A last set of fewer trees fills its spare lanes
 * with its first tree again (walked and checked like it, never summed). Each
 * step checks the node and the feature index before it reads by them; a walk
 * that meets one out of range stops and returns 0. The lanes' leaves are then
 * summed in tree order, so the sums are the one-tree-at-a-time walk's, bit for
 * bit. 16 lanes for XGBoost (fashion-MNIST, 500 trees of depth 5, one row:
 * about 9 -> 4.5 us); 8 for scikit-learn's forests, whose small ones (iris) sit in
 * L1 where more lanes only cost.
 */
#ifndef FOREST_LANES
#define FOREST_LANES 8
#endif
#ifndef BOOSTER_LANES
#define BOOSTER_LANES 16
#endif

/* The lanes' roots: trees t0, t0 + 1, ...; returns how many lanes are trees. */
static inline int start_lanes(const walk_t *w, Py_ssize_t t0, int lanes, int64_t *node) {
    int n = w->trees - t0 < lanes ? (int)(w->trees - t0) : lanes;
    for (int i = 0; i < lanes; i++) node[i] = w->roots[t0 + (i < n ? i : 0)];
    return n;
}

/* `depth` steps of each lane by scikit-learn's rule: left when (double)x <= threshold.
 * scikit-learn's trees end at very different depths, so the walk stops early
 * once every lane is at its leaf (XGBoost's, mostly full, gain nothing by it). */
static inline int forest_lanes(const float *row, const int64_t *feature, const double *thr, const int64_t *lo,
                               const int64_t *hi, uint64_t nodes, uint64_t columns, int depth, int64_t *node) {
    for (int d = 0; d < depth; d++) {
        int64_t moved = 0;
#pragma GCC unroll 32
        for (int i = 0; i < FOREST_LANES; i++) {
            int64_t at = node[i];
            if ((uint64_t)at >= nodes) return 0;
            int64_t f = feature[at];
            if ((uint64_t)f >= columns) return 0;
            int64_t left = lo[at], right = hi[at]; /* both read: a select, not a branch */
            int64_t next = (double)row[f] <= thr[at] ? left : right;
            moved |= next ^ at;
            node[i] = next;
        }
        /* every lane stayed put, so at a leaf (a node whose step is itself): the
         * levels left would only check and step the same nodes again */
        if (!moved) break;
    }
    return 1;
}

/* `depth` steps of each lane by XGBoost's rule: child 2 * node + (x >= threshold). */
static inline int booster_lanes(const float *row, const int64_t *feature, const float *thr, const int64_t *kids,
                                uint64_t nodes, uint64_t columns, int depth, int64_t *node) {
    for (int d = 0; d < depth; d++) {
#pragma GCC unroll 32
        for (int i = 0; i < BOOSTER_LANES; i++) {
            int64_t at = node[i];
            if ((uint64_t)at >= nodes) return 0;
            int64_t f = feature[at];
            if ((uint64_t)f >= columns) return 0;
            node[i] = kids[2 * at + (row[f] >= thr[at])];
        }
    }
    return 1;
}

/* The GIL goes to other threads only for long walks: for one row it would
 * cost more than the walk, and hand the event loop's thread a wait. */
static PyThreadState *maybe_release(const walk_t *w, int depth) {
    return (double)w->rows * (double)w->trees * depth > BIG_WALK ? PyEval_SaveThread() : NULL;
}

static PyObject *finish(walk_t *w, PyThreadState *saved, int ok) {
    if (saved != NULL) PyEval_RestoreThread(saved);
    release(w->args, 8);
    if (!ok) return bad_trees();
    Py_RETURN_NONE;
}

/* Both functions take nine positional arguments, the eighth (depth) an int;
 * a vectorcall (METH_FASTCALL) with no argument tuple to build and parse. */
static int unpack(PyObject *const *a, Py_ssize_t nargs, const char *name, int *depth) {
    if (nargs != 9) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly 9 arguments (%zd given)", name, nargs);
        return -1;
    }
    long d = PyLong_AsLong(a[7]);
    if (d == -1 && PyErr_Occurred()) return -1;
    if (d < INT_MIN || d > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "depth does not fit a C int");
        return -1;
    }
    *depth = (int)d;
    return 0;
}

/*
 * forest_mean(x, feature, threshold, left, right, roots, value, depth, out) -> None
 *
 * The mean over the trees of the value (a float64 row of `outputs`) of the leaf
 * each reaches by scikit-learn's rule: summed tree by tree in order, then
 * divided by the number of trees, as scikit-learn's forests average.
 */
static PyObject *py_forest_mean(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    int depth;
    if (unpack(a, nargs, "forest_mean", &depth) < 0) return NULL;
    PyObject *x = a[0], *feature = a[1], *threshold = a[2], *left = a[3], *right = a[4], *roots = a[5],
             *value = a[6], *out = a[8];
    walk_t w;
    if (take_walk(&w, x, roots, out, "d", 8, feature, threshold, "d", 8) < 0 ||
        take(left, &w.args[5], "left", INTP, 8, 1, 0) < 0 || take(right, &w.args[6], "right", INTP, 8, 1, 0) < 0 ||
        take(value, &w.args[7], "value", "d", 8, 2, 0) < 0) {
        release(w.args, 8);
        return NULL;
    }
    Py_ssize_t outputs = w.args[7].view.shape[1];
    if (w.args[5].view.shape[0] != w.nodes || w.args[6].view.shape[0] != w.nodes ||
        w.args[7].view.shape[0] != w.nodes || depth < 0 || w.args[2].view.shape[1] != outputs)
        return finish(&w, NULL, 0);
    const int64_t *lo = w.args[5].view.buf, *hi = w.args[6].view.buf;
    const double *thr = w.threshold, *values = w.args[7].view.buf;
    int ok = 1;
    PyThreadState *saved = maybe_release(&w, depth);
    for (Py_ssize_t r = 0; r < w.rows && ok; r++) {
        const float *row = w.x + r * w.columns;
        double *mean = (double *)w.out + r * outputs;
        for (Py_ssize_t o = 0; o < outputs; o++) mean[o] = 0.0;
        for (Py_ssize_t t0 = 0; t0 < w.trees && ok; t0 += FOREST_LANES) {
            int64_t node[FOREST_LANES];
            int n = start_lanes(&w, t0, FOREST_LANES, node);
            if (!(ok = forest_lanes(row, w.feature, thr, lo, hi, w.nodes, w.columns, depth, node))) break;
            for (int i = 0; i < n && ok; i++)  /* tree by tree, in order */
                if ((ok = (uint64_t)node[i] < (uint64_t)w.nodes)) {
                    const double *leaf = values + node[i] * outputs;
                    for (Py_ssize_t o = 0; o < outputs; o++) mean[o] += leaf[o];
                }
        }
        for (Py_ssize_t o = 0; o < outputs; o++) mean[o] /= (double)w.trees;
    }
    return finish(&w, saved, ok);
}

/*
 * booster_margins(x, feature, threshold, children, roots, value, base, depth, out) -> None
 *
 * XGBoost's margins: tree t (round t / groups, group t % groups) adds the
 * float32 value of the leaf the row reaches to its group's margin, which
 * starts at base[group]; the adds are float32 and in round order, as XGBoost
 * sums them (and as numpy's float32 cumsum over the rounds does).
 */
static PyObject *py_booster_margins(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    int depth;
    if (unpack(a, nargs, "booster_margins", &depth) < 0) return NULL;
    PyObject *x = a[0], *feature = a[1], *threshold = a[2], *children = a[3], *roots = a[4], *value = a[5],
             *base = a[6], *out = a[8];
    walk_t w;
    if (take_walk(&w, x, roots, out, "f", 4, feature, threshold, "f", 4) < 0 ||
        take(children, &w.args[5], "children", INTP, 8, 1, 0) < 0 ||
        take(value, &w.args[6], "value", "f", 4, 1, 0) < 0 || take(base, &w.args[7], "base", "f", 4, 1, 0) < 0) {
        release(w.args, 8);
        return NULL;
    }
    Py_ssize_t groups = w.args[7].view.shape[0];
    if (w.args[5].view.shape[0] != 2 * w.nodes || w.args[6].view.shape[0] != w.nodes || depth < 0 ||
        groups < 1 || w.trees % groups || w.args[2].view.shape[1] != groups)
        return finish(&w, NULL, 0);
    const int64_t *kids = w.args[5].view.buf;
    const float *thr = w.threshold, *leaf_value = w.args[6].view.buf, *start = w.args[7].view.buf;
    int ok = 1;
    PyThreadState *saved = maybe_release(&w, depth);
    for (Py_ssize_t r = 0; r < w.rows && ok; r++) {
        const float *row = w.x + r * w.columns;
        float *margin = (float *)w.out + r * groups;
        for (Py_ssize_t g = 0; g < groups; g++) margin[g] = start[g];
        Py_ssize_t group = 0; /* tree t's: t % groups */
        for (Py_ssize_t t0 = 0; t0 < w.trees && ok; t0 += BOOSTER_LANES) {
            int64_t node[BOOSTER_LANES];
            int n = start_lanes(&w, t0, BOOSTER_LANES, node);
            if (!(ok = booster_lanes(row, w.feature, thr, kids, w.nodes, w.columns, depth, node))) break;
            for (int i = 0; i < n && ok; i++)  /* tree by tree, in order */
                if ((ok = (uint64_t)node[i] < (uint64_t)w.nodes)) {
                    margin[group] += leaf_value[node[i]];
                    if (++group == groups) group = 0;
                }
        }
    }
    return finish(&w, saved, ok);
}

/*
 * booster_labels(x, margins, labels, tie) -> bool
 *
 * The labels XGBoost's classifiers give rows whose margins were walked here,
 * when they are certain: False (labels not all written) when a row of x
 * (float32) holds a NaN (a missing value, whose direction the walk does not
 * know) or its margins (float32, one column per group) are within `tie` of
 * each other (two groups: the top two; one group, binary: of 0), where
 * XGBoost's float32 transform may order them otherwise. Else True, with
 * labels (int64) the index of each row's largest margin (the first of equal
 * ones, as numpy's argmax), or for one group 1 when the margin is above 0.
 */
static PyObject *py_booster_labels(PyObject *self, PyObject *args_in) {
    PyObject *x, *margins, *labels;
    double tie;
    if (!PyArg_ParseTuple(args_in, "OOOd", &x, &margins, &labels, &tie)) return NULL;
    arg_t args[3];
    memset(args, 0, sizeof args);
    if (take(x, &args[0], "x", "f", 4, 2, 0) < 0 || take(margins, &args[1], "margins", "f", 4, 2, 0) < 0 ||
        take(labels, &args[2], "labels", "lq", 8, 1, 1) < 0) {
        release(args, 3);
        return NULL;
    }
    Py_ssize_t rows = args[0].view.shape[0], columns = args[0].view.shape[1], groups = args[1].view.shape[1];
    if (args[1].view.shape[0] != rows || args[2].view.shape[0] != rows || groups < 1) {
        release(args, 3);
        PyErr_SetString(PyExc_ValueError, "x, margins and labels do not have the same rows");
        return NULL;
    }
    const float *row = args[0].view.buf, *margin = args[1].view.buf;
    int64_t *label = args[2].view.buf;
    int certain = 1;
    for (Py_ssize_t r = 0; r < rows && certain; r++, row += columns, margin += groups) {
        int missing = 0;
        for (Py_ssize_t c = 0; c < columns; c++) missing |= row[c] != row[c];
        if (missing) {
            certain = 0;
            break;
        }
        if (groups == 1) {
            certain = !((double)fabsf(margin[0]) < tie);
            label[r] = margin[0] > 0.0f;
            continue;
        }
        Py_ssize_t best = 0;
        for (Py_ssize_t g = 1; g < groups; g++)
            if (margin[g] > margin[best]) best = g;
        float second = -INFINITY;
        for (Py_ssize_t g = 0; g < groups; g++)
            if (g != best && margin[g] > second) second = margin[g];
        certain = !((double)margin[best] - (double)second < tie);
        label[r] = best;
    }
    release(args, 3);
    return PyBool_FromLong(certain);
}

static PyMethodDef METHODS[] = {
    {"forest_mean", (PyCFunction)(void (*)(void))py_forest_mean, METH_FASTCALL,
     "forest_mean(x, feature, threshold, left, right, roots, value, depth, out): the trees' mean value"},
    {"booster_margins", (PyCFunction)(void (*)(void))py_booster_margins, METH_FASTCALL,
     "booster_margins(x, feature, threshold, children, roots, value, base, depth, out): XGBoost's sums"},
    {"booster_labels", py_booster_labels, METH_VARARGS,
     "booster_labels(x, margins, labels, tie) -> whether the labels are certain (see the source)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_trees", "What rows reach in flattened tree ensembles.", -1, METHODS,
};

PyMODINIT_FUNC PyInit__trees(void) { return PyModule_Create(&MODULE); }
