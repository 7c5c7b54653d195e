/*
 * What servekit's C extensions share: the numpy arrays (any object with the
 * buffer protocol) a call takes, checked before use and released on every path.
 */
#ifndef SERVEKIT_BUFFERS_H
#define SERVEKIT_BUFFERS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
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

/* A C-contiguous buffer of `ndim` dimensions whose items are native `formats`,
 * `itemsize` bytes each (intp is 'i', 'l', 'q' or 'n' depending on the platform). */
static int take(PyObject *object, arg_t *arg, const char *what, const char *formats, Py_ssize_t itemsize,
                int ndim, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, &arg->view, flags) < 0) return -1;
    arg->held = 1;
    const char *format = arg->view.format ? arg->view.format : "B";
#if PY_LITTLE_ENDIAN
    if (*format == '=' || *format == '<' || *format == '@') format++;
#else
    if (*format == '=' || *format == '>' || *format == '@' || *format == '!') format++;
#endif
    if (arg->view.itemsize != itemsize || strlen(format) != 1 || strchr(formats, *format) == NULL ||
        arg->view.ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s: expected a C-contiguous %d-D array of %zd-byte items (%s)", what,
                     ndim, itemsize, formats);
        return -1;
    }
    return 0;
}

#endif /* SERVEKIT_BUFFERS_H */
