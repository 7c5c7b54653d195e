/*
 * servekit._numbers: numeric JSON arrays straight into machine buffers.
 *
 * A V2 request carrying 10,000 x 784 numbers as JSON spends most of its decode
 * time building one Python object per number (orjson) and then reading them
 * back (np.asarray). This module walks the request body once, finds each
 * inputs[i].data array and parses it into a flat 8-byte buffer, producing
 * exactly what np.asarray(orjson.loads(array)) would: a bool, int64 or float64
 * array of the same shape and the same bits.
 *
 * Anything it is not sure about (strings, nulls, empty or ragged lists, integers
 * beyond int64, infinities, escaped or duplicate keys, malformed text) makes it
 * answer None, and the caller takes the ordinary orjson path, which produces
 * the usual values and error messages. Text outside the data arrays is only
 * skimmed here: the caller hands it to orjson, which validates it.
 *
 * Floats are correctly rounded: exact fast paths where both operands of a single
 * multiplication or division are exactly representable (Clinger), an 80-bit
 * long double path with a check for the one ambiguous case, and Python's own
 * correctly rounded string-to-double conversion for everything else.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define MAX_DEPTH 32
#define SLOW_TOKEN_STACK 64

typedef enum { KIND_BOOL = 0, KIND_INT = 1, KIND_FLOAT = 2 } kind_t;
typedef enum { TOKEN_UNUSUAL = 0, TOKEN_INT, TOKEN_FLOAT, TOKEN_BOOL } token_t;

static const double POW10[23] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

#if LDBL_MANT_DIG == 64
/* 10^k is exact in a 64-bit significand while 5^k < 2^64, i.e. k <= 27. */
#define LPOW10_MAX 27
static long double LPOW10[LPOW10_MAX + 1];
#endif

static inline int is_digit(char c) { return (unsigned char)(c - '0') < 10; }
static inline int is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

static inline const char *skip_ws(const char *p) {
    while (is_ws(*p)) p++;
    return p;
}

/* Python's correctly rounded, locale-independent conversion of one token. */
static int slow_double(const char *start, const char *stop, double *out) {
    char stack[SLOW_TOKEN_STACK];
    size_t len = (size_t)(stop - start);
    char *copy = len < sizeof stack ? stack : PyMem_Malloc(len + 1);
    if (copy == NULL) return 0;
    memcpy(copy, start, len);
    copy[len] = '\0';
    char *end = NULL;
    double value = PyOS_string_to_double(copy, &end, NULL);
    int ok = !(value == -1.0 && PyErr_Occurred()) && end == copy + len;
    if (copy != stack) PyMem_Free(copy);
    if (!ok) {
        PyErr_Clear();
        return 0;
    }
    *out = value;
    return 1;
}

#if LDBL_MANT_DIG == 64
/* w * 10^e10 through one rounding to 64 bits, then one to 53, or 0 when that
 * could differ from the correctly rounded result. The second rounding is only
 * wrong when the first landed exactly on a midpoint between two doubles (the
 * 11 dropped bits are 10000000000); otherwise the exact value lies on the same
 * side of every midpoint as the 64-bit result. */
static int long_double_path(uint64_t w, int e10, double *out) {
    if (e10 < -LPOW10_MAX || e10 > LPOW10_MAX) return 0;
    long double x = (long double)w;
    x = e10 >= 0 ? x * LPOW10[e10] : x / LPOW10[-e10];
    uint64_t significand;
    memcpy(&significand, &x, sizeof significand);
    if ((significand & 0x7FF) == 0x400) return 0;
    *out = (double)x;
    return 1;
}
#endif

static const uint64_t U64POW10[20] = {
    1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL,
    100000000ULL, 1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL,
    10000000000000ULL, 100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL,
    100000000000000000ULL, 1000000000000000000ULL, 10000000000000000000ULL,
};

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* A mask of the bytes of a chunk that are not digits: a byte is a digit when
 * its high nibble is 3 and adding 6 keeps it so (a carry out of a non-digit
 * byte only disturbs bytes after it, past the first non-digit). */
static inline uint64_t non_digits(uint64_t chunk) {
    const uint64_t high = 0xF0F0F0F0F0F0F0F0ULL, threes = 0x3030303030303030ULL;
    return ((chunk & high) ^ threes) | (((chunk + 0x0606060606060606ULL) & high) ^ threes);
}

/* The value of the n digits (1 to 8) that start a little-endian 8-byte chunk:
 * moved to the top bytes they read as an 8-digit number with leading zeros;
 * then pairs, quads and octets are combined. */
static inline uint64_t swar_value(uint64_t chunk, int n) {
    uint64_t v = (chunk << (64 - 8 * n)) & 0x0F0F0F0F0F0F0F0FULL;
    v = (v * 2561) >> 8 & 0x00FF00FF00FF00FFULL;
    v = (v * 6553601) >> 16 & 0x0000FFFF0000FFFFULL;
    return (v * 42949672960001ULL) >> 32;
}
#endif

/*
 * The run of up to 8 digits at p: how many, and their value. Eight bytes are
 * tested at once (SWAR) so that numbers of varying length cost no per-digit
 * branches; the body's end is never read past.
 */
static inline int digits8(const char *p, const char *end, uint64_t *value) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t chunk = 0;
    memcpy(&chunk, p, end - p >= 8 ? 8 : (size_t)(end - p));
    uint64_t other = non_digits(chunk);
    int n = other ? __builtin_ctzll(other) >> 3 : 8;
    if (n == 0) return 0;
    *value = swar_value(chunk, n);
    return n;
#else
    uint64_t v = 0;
    int n = 0;
    while (n < 8 && p + n < end && is_digit(p[n])) v = v * 10 + (uint64_t)(p[n++] - '0');
    *value = v;
    return n;
#endif
}

/* Past a run of digits of any length. */
static inline const char *skip_digits(const char *p) {
    while (is_digit(*p)) p++;
    return p;
}

/* One JSON number or true/false at *pp, in strict JSON grammar. */
static inline token_t read_token(const char **pp, const char *end, int64_t *ival, double *dval) {
    const char *p = *pp;
    const char *start = p;
    int negative = 0;
    if (*p == 't') {
        if (end - p < 4 || memcmp(p, "true", 4) != 0) return TOKEN_UNUSUAL;
        *pp = p + 4;
        *ival = 1;
        return TOKEN_BOOL;
    }
    if (*p == 'f') {
        if (end - p < 5 || memcmp(p, "false", 5) != 0) return TOKEN_UNUSUAL;
        *pp = p + 5;
        *ival = 0;
        return TOKEN_BOOL;
    }
    if (*p == '-') {
        negative = 1;
        p++;
    }
    /* the value is w * 10^e10; w holds at most 19 significant digits */
    uint64_t w = 0, v;
    int digits = 0;
    int too_many = 0;   /* more digits than w holds: the exact slow path only */
    int e10 = 0;
    int n;
    if (*p == '0') {
        p++;
        if (is_digit(*p)) return TOKEN_UNUSUAL; /* leading zero */
    } else {
        n = digits8(p, end, &w);
        if (n == 0) return TOKEN_UNUSUAL;
        digits = n;
        p += n;
        while (n == 8 && (n = digits8(p, end, &v)) > 0) {
            if (digits + n > 19) {
                too_many = 1;
                p = skip_digits(p);
                break;
            }
            w = w * U64POW10[n] + v;
            digits += n;
            p += n;
        }
    }
    int is_float = 0;
    if (*p == '.') {
        is_float = 1;
        p++;
        if (!is_digit(*p)) return TOKEN_UNUSUAL;
        if (p[0] == '0' && !is_digit(p[1])) {
            p++; /* ".0", as Python writes whole floats: nothing to add */
        } else {
            if (w == 0) {
                while (*p == '0') { /* leading zeros of the fraction: not significant */
                    p++;
                    e10--;
                }
            }
            while ((n = digits8(p, end, &v)) > 0) {
                if (too_many || digits + n > 19) {
                    too_many = 1;
                    p = skip_digits(p);
                    break;
                }
                w = w * U64POW10[n] + v;
                digits += n;
                e10 -= n;
                p += n;
                if (n < 8) break;
            }
            /* trailing zeros need no division */
            while (e10 < 0 && w != 0 && w % 10 == 0) {
                w /= 10;
                e10++;
            }
        }
    }
    if (*p == 'e' || *p == 'E') {
        is_float = 1;
        p++;
        int exp_negative = 0;
        if (*p == '+' || *p == '-') {
            exp_negative = *p == '-';
            p++;
        }
        if (!is_digit(*p)) return TOKEN_UNUSUAL;
        int exponent = 0;
        while (is_digit(*p)) {
            if (exponent < 100000) exponent = exponent * 10 + (*p - '0');
            p++;
        }
        e10 += exp_negative ? -exponent : exponent;
    }
    *pp = p;
    if (!is_float) {
        /* 19 digits may exceed int64 and 20 always do; orjson then yields a
         * float, which the ordinary path reproduces */
        if (too_many) return TOKEN_UNUSUAL;
        if (negative) {
            if (w > (uint64_t)INT64_MAX + 1) return TOKEN_UNUSUAL;
            *ival = (int64_t)(0 - w);
        } else {
            if (w > (uint64_t)INT64_MAX) return TOKEN_UNUSUAL;
            *ival = (int64_t)w;
        }
        return TOKEN_INT;
    }
    double value;
    if (!too_many && w <= ((uint64_t)1 << 53) && e10 >= -22 && e10 <= 22) {
        /* Clinger: both operands exact, one rounding, so correctly rounded */
        value = (double)w;
        if (e10 > 0) value *= POW10[e10];
        else if (e10 < 0) value /= POW10[-e10];
        *dval = negative ? -value : value;
        return TOKEN_FLOAT;
    }
#if LDBL_MANT_DIG == 64
    if (!too_many && long_double_path(w, e10, &value)) {
        *dval = negative ? -value : value;
        return TOKEN_FLOAT;
    }
#endif
    if (!slow_double(start, p, &value)) return TOKEN_UNUSUAL;
    if (value - value != 0.0) return TOKEN_UNUSUAL; /* infinity: orjson rejects it */
    *dval = value;
    return TOKEN_FLOAT;
}

#if defined(__SSE2__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* A mask of the bytes of the 64 at p equal to c (bit i: p[i]). */
static inline uint64_t bytes_equal(const __m128i chunks[4], char c) {
    const __m128i wanted = _mm_set1_epi8(c);
    uint64_t mask = 0;
    for (int i = 0; i < 4; i++) {
        mask |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(chunks[i], wanted)) << (16 * i);
    }
    return mask;
}

/*
 * int_run's first part, 64 bytes at a time: the digits, commas and spaces of
 * a window are found as bit masks, the whole of its text checked at once (each
 * number 1 to 8 digits without a leading zero, then a comma and at most one
 * space, then the next number's first digit), and then each number is read
 * from its own 8-byte load, whose address the masks give: no number waits on
 * the parse of the one before it. Takes the numbers of the window up to the
 * first that is not such a one (or the last that starts in it) and goes on
 * with the next window; returns how many it stored from slots[count] on, with
 * *pp at the first number not taken, for int_run's one-at-a-time loop.
 */
static Py_ssize_t int_run_wide(const char **pp, const char *end, char *slots, Py_ssize_t count,
                               Py_ssize_t capacity) {
    const char *p = *pp;
    Py_ssize_t taken = 0;
    const __m128i below = _mm_set1_epi8('0' - 1), above = _mm_set1_epi8('9' + 1);
    while (end - p >= 72) { /* the window, and an 8-byte load at any of its numbers */
        __m128i chunks[4];
        uint64_t digits = 0;
        for (int i = 0; i < 4; i++) {
            chunks[i] = _mm_loadu_si128((const __m128i *)(p + 16 * i));
            __m128i is_digit = _mm_and_si128(_mm_cmpgt_epi8(chunks[i], below), _mm_cmplt_epi8(chunks[i], above));
            digits |= (uint64_t)(uint16_t)_mm_movemask_epi8(is_digit) << (16 * i);
        }
        if (!(digits & 1)) break;
        uint64_t commas = bytes_equal(chunks, ','), spaces = bytes_equal(chunks, ' ');
        uint64_t zeros = bytes_equal(chunks, '0');
        uint64_t starts = digits & ~(digits << 1);  /* first digits */
        uint64_t lasts = digits & ~(digits >> 1);   /* last digits (bit 63: perhaps not) */
        /* every place the text is not "digits, comma, at most one space, digit" */
        uint64_t bad = ~(digits | commas | spaces)
                       | (commas & ~(digits << 1))             /* a comma not after a digit */
                       | (lasts & ~(commas >> 1))              /* a number not followed by a comma */
                       | (spaces & ~(commas << 1))             /* a space not after a comma */
                       | ((spaces << 1) & ~digits)             /* no digit after the space */
                       | (((commas << 1) & ~spaces) & ~digits) /* nor after a comma without one */
                       | (starts & zeros & (digits >> 1));     /* a leading zero */
        /* the numbers wholly before the first such place, and then followed by
         * the start of another: the window is taken up to that start */
        uint64_t before = bad ? (bad & -bad) - 1 : ~0ULL;
        uint64_t next = starts & before & ~1ULL;
        if (!next) break;
        int stop = 63 - __builtin_clzll(next);
        uint64_t numbers = starts & ((1ULL << stop) - 1);
        if (count + taken + __builtin_popcountll(numbers) > capacity) break;
        while (numbers) {
            int at = __builtin_ctzll(numbers);
            numbers &= numbers - 1;
            int n = __builtin_ctzll(~(digits >> at));
            if (n > 8) { /* the scalar loop stops at it too */
                stop = at;
                break;
            }
            uint64_t chunk;
            memcpy(&chunk, p + at, 8);
            int64_t value = (int64_t)swar_value(chunk, n);
            memcpy(slots + (count + taken) * 8, &value, 8);
            taken++;
        }
        p += stop;
        if (stop == 0) break;
    }
    *pp = p;
    return taken;
}
#endif

/*
 * A run of small whole numbers at *pp, the commonest data (pixels, counts,
 * ids): each of 1 to 7 digits (no sign, no leading zero), then a comma and at
 * most one space, read from one 8-byte load, so the next number's address
 * waits on no further load (after int_run_wide, where SSE2 is, has taken what
 * it can 64 bytes at a time). Stores them as int64 from slots[*count] on
 * (below capacity) and returns how many; stops at anything else (the last
 * number of a list, before its ']', among them) with *pp at the first one not
 * taken, which the general loop reads.
 */
__attribute__((noinline)) static Py_ssize_t int_run(const char **pp, const char *end, char *slots, Py_ssize_t count,
                                                      Py_ssize_t capacity) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const char *p = *pp;
    Py_ssize_t taken = 0;
#if defined(__SSE2__)
    taken = int_run_wide(&p, end, slots, count, capacity);
#endif
    while (end - p >= 8 && count + taken < capacity) {
        uint64_t chunk;
        memcpy(&chunk, p, 8);
        uint64_t other = non_digits(chunk);
        if (other == 0) break; /* 8 digits or more */
        int n = __builtin_ctzll(other) >> 3;
        if (n == 0 || ((chunk >> (8 * n)) & 0xFF) != ',') break;
        if ((chunk & 0xFF) == '0' && n > 1) break; /* a leading zero: not JSON */
        int64_t value = (int64_t)swar_value(chunk, n);
        memcpy(slots + (count + taken) * 8, &value, 8);
        taken++;
        /* past the comma, and a space after it (n <= 6 here: byte n + 1 is in the chunk) */
        p += n + 1 + (n < 7 && ((chunk >> (8 * (n + 1))) & 0xFF) == ' ');
    }
    *pp = p;
    return taken;
#else
    (void)pp; (void)end; (void)slots; (void)count; (void)capacity;
    return 0;
#endif
}

/* Where one parsed array went in the output buffer, and what it is. */
typedef struct {
    char *base;          /* the output buffer: 8-byte slots */
    Py_ssize_t capacity; /* slots in it */
    Py_ssize_t first;    /* the slot this array starts at */
    Py_ssize_t count;
    kind_t kind;
    int ndim;
    Py_ssize_t shape[MAX_DEPTH];
} parsed_t;

/* int64 slots to float64 in place (same width), when the first float arrives. */
static void ints_to_floats(char *base, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        int64_t v;
        memcpy(&v, base + i * 8, 8);
        double d = (double)v;
        memcpy(base + i * 8, &d, 8);
    }
}

/*
 * The nested array at *pp into slots from out->first on. Returns 1 and
 * advances *pp past it, or 0 when the text is not a plain rectangular numeric
 * array. The hot state lives in locals: stores through the char buffer could
 * otherwise alias the struct and force reloads on every element.
 */
static int parse_array(const char **pp, const char *end, parsed_t *out) {
    const char *p = *pp;
    Py_ssize_t counts[MAX_DEPTH];
    Py_ssize_t shape[MAX_DEPTH];
    int leaf_depth = -1;
    int depth = 0;
    kind_t kind = KIND_BOOL;
    Py_ssize_t count = 0;
    char *base = out->base + out->first * 8;
    Py_ssize_t capacity = out->capacity - out->first;
    for (int i = 0; i < MAX_DEPTH; i++) shape[i] = -1;
    if (*p != '[') return 0;
    p++;
    counts[0] = 0;
    for (;;) {
        /* a value is expected here */
        p = skip_ws(p);
        if (*p == '[') {
            if (depth + 1 >= MAX_DEPTH || (leaf_depth >= 0 && depth + 1 > leaf_depth)) return 0;
            depth++;
            counts[depth] = 0;
            p++;
            continue;
        }
        if (leaf_depth < 0) {
            leaf_depth = depth;
        } else if (depth != leaf_depth) {
            return 0;
        }
        int64_t ival = 0;
        double dval = 0.0;
        token_t token = read_token(&p, end, &ival, &dval);
        if (token == TOKEN_UNUSUAL || count == capacity) return 0;
        char *slot = base + count * 8;
        if (token == TOKEN_FLOAT) {
            if (kind != KIND_FLOAT) {
                ints_to_floats(base, count);
                kind = KIND_FLOAT;
            }
            memcpy(slot, &dval, 8);
        } else {
            if (token == TOKEN_INT && kind == KIND_BOOL) kind = KIND_INT;
            if (kind == KIND_FLOAT) {
                dval = (double)ival;
                memcpy(slot, &dval, 8);
            } else {
                memcpy(slot, &ival, 8);
            }
        }
        count++;
        counts[depth]++;
        if (kind == KIND_INT && *p == ',') { /* perhaps a run of whole numbers follows */
            p = skip_ws(p + 1);
            Py_ssize_t taken = int_run(&p, end, base, count, capacity);
            count += taken;
            counts[depth] += taken;
            continue;
        }
        /* after a value: ',' for the next one, or ']' closing lists */
        for (;;) {
            p = skip_ws(p);
            if (*p == ',') {
                p++;
                break;
            }
            if (*p != ']') return 0;
            p++;
            if (shape[depth] < 0) {
                shape[depth] = counts[depth];
            } else if (shape[depth] != counts[depth]) {
                return 0; /* ragged */
            }
            if (depth == 0) {
                if (kind == KIND_BOOL) { /* one byte each, packed in place */
                    for (Py_ssize_t i = 0; i < count; i++) {
                        int64_t v;
                        memcpy(&v, base + i * 8, 8);
                        base[i] = v != 0;
                    }
                }
                out->kind = kind;
                out->count = count;
                out->ndim = leaf_depth + 1;
                memcpy(out->shape, shape, sizeof shape);
                *pp = p;
                return 1;
            }
            depth--;
            counts[depth]++;
        }
    }
}

/* Past one JSON string starting at its opening quote; *escaped reports '\'. */
static const char *skip_string(const char *p, const char *end, int *escaped) {
    p++;
    for (;;) {
        const char *quote = memchr(p, '"', (size_t)(end - p));
        if (quote == NULL) return NULL;
        /* an odd run of backslashes before the quote escapes it */
        const char *q = quote;
        while (q > p && q[-1] == '\\') q--;
        if (q != quote) *escaped = 1;
        if (((quote - q) & 1) == 0) {
            if (memchr(p, '\\', (size_t)(quote - p)) != NULL) *escaped = 1;
            return quote + 1;
        }
        p = quote + 1;
    }
}

/* Past any JSON value, leniently: orjson validates all text skipped here. */
static const char *skip_value(const char *p, const char *end) {
    int escaped = 0;
    if (*p == '"') return skip_string(p, end, &escaped);
    if (*p == '[' || *p == '{') {
        Py_ssize_t level = 0;
        while (p < end) {
            char c = *p;
            if (c == '"') {
                p = skip_string(p, end, &escaped);
                if (p == NULL) return NULL;
                continue;
            }
            if (c == '[' || c == '{') level++;
            else if (c == ']' || c == '}') {
                if (--level == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    const char *start = p;
    while (p < end && *p != ',' && *p != ']' && *p != '}' && !is_ws(*p)) p++;
    return p == start ? NULL : p;
}

/* A key at its opening quote: its raw bytes, or NULL if escaped or broken. */
static const char *read_key(const char *p, const char *end, const char **key, Py_ssize_t *len) {
    if (*p != '"') return NULL;
    int escaped = 0;
    const char *after = skip_string(p, end, &escaped);
    if (after == NULL || escaped) return NULL;
    *key = p + 1;
    *len = after - p - 2;
    return after;
}

static inline int key_is(const char *key, Py_ssize_t len, const char *name) {
    return (size_t)len == strlen(name) && memcmp(key, name, (size_t)len) == 0;
}

static PyObject *KIND_NAMES[3];

/* (start, end, byte offset, kind, shape) of a parsed array. */
static PyObject *result_tuple(parsed_t *parsed, Py_ssize_t start, Py_ssize_t end) {
    PyObject *shape = PyTuple_New(parsed->ndim);
    if (shape == NULL) return NULL;
    for (int i = 0; i < parsed->ndim; i++) {
        PyObject *dim = PyLong_FromSsize_t(parsed->shape[i]);
        if (dim == NULL) {
            Py_DECREF(shape);
            return NULL;
        }
        PyTuple_SET_ITEM(shape, i, dim);
    }
    return Py_BuildValue("nnnON", start, end, parsed->first * 8, KIND_NAMES[parsed->kind], shape);
}

/* A writable, C-contiguous output buffer as 8-byte slots. */
static int output_buffer(PyObject *object, Py_buffer *view, parsed_t *parsed) {
    if (PyObject_GetBuffer(object, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return -1;
    parsed->base = view->buf;
    parsed->capacity = view->len / 8;
    parsed->first = 0;
    return 0;
}

/*
 * The text of a bytes or bytearray object. Both keep a NUL after their last
 * byte (the C API documents it for each), which the scans rely on to stop;
 * other buffers carry no such guarantee and are refused.
 */
static int nul_terminated(PyObject *object, const char **text, Py_ssize_t *size) {
    if (PyBytes_Check(object)) {
        *text = PyBytes_AS_STRING(object);
        *size = PyBytes_GET_SIZE(object);
        return 0;
    }
    if (PyByteArray_Check(object)) {
        *text = PyByteArray_AS_STRING(object);
        *size = PyByteArray_GET_SIZE(object);
        return 0;
    }
    PyErr_SetString(PyExc_TypeError, "the body must be bytes or bytearray");
    return -1;
}

/* parse_array(body, offset, out) -> (start, end, byte offset, kind, shape) | None */
static PyObject *py_parse_array(PyObject *self, PyObject *args) {
    PyObject *bytes, *target;
    Py_ssize_t offset;
    if (!PyArg_ParseTuple(args, "OnO", &bytes, &offset, &target)) return NULL;
    const char *body;
    Py_ssize_t size;
    if (nul_terminated(bytes, &body, &size) < 0) return NULL;
    const char *end = body + size;
    if (offset < 0 || offset > size) {
        PyErr_SetString(PyExc_ValueError, "offset outside the body");
        return NULL;
    }
    parsed_t parsed;
    Py_buffer view;
    if (output_buffer(target, &view, &parsed) < 0) return NULL;
    const char *p = skip_ws(body + offset);
    Py_ssize_t start = p - body;
    PyObject *result = parse_array(&p, end, &parsed) ? result_tuple(&parsed, start, p - body)
                                                     : Py_NewRef(Py_None);
    PyBuffer_Release(&view);
    return result;
}

/* The data array of one inputs[] entry (an object at p), if any. */
static const char *scan_input(const char *p, const char *end, Py_ssize_t index,
                              const char *body, parsed_t *parsed, PyObject *found) {
    int seen_data = 0;
    p = skip_ws(p + 1);
    if (*p == '}') return p + 1;
    for (;;) {
        const char *key;
        Py_ssize_t len;
        p = read_key(p, end, &key, &len);
        if (p == NULL) return NULL;
        p = skip_ws(p);
        if (*p != ':') return NULL;
        p = skip_ws(p + 1);
        int is_data = key_is(key, len, "data");
        if (is_data && seen_data) return NULL; /* duplicate: orjson keeps the last */
        seen_data |= is_data;
        if (is_data && *p == '[') {
            Py_ssize_t start = p - body;
            if (!parse_array(&p, end, parsed)) return NULL;
            PyObject *tuple = result_tuple(parsed, start, p - body);
            PyObject *entry = tuple == NULL ? NULL : Py_BuildValue("(nN)", index, tuple);
            if (entry == NULL || PyList_Append(found, entry) < 0) {
                Py_XDECREF(entry);
                return NULL;
            }
            Py_DECREF(entry);
            parsed->first += parsed->count;
        } else {
            p = skip_value(p, end);
            if (p == NULL) return NULL;
        }
        p = skip_ws(p);
        if (*p == '}') return p + 1;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1);
    }
}

/*
 * scan_request(body, out) -> [(input_index, (start, end, byte offset, kind, shape)), ...] | None
 *
 * Every inputs[i].data of a V2 request body that is a numeric array, parsed
 * into consecutive 8-byte slots of out (len(body) // 2 + 1 slots always do).
 */
static PyObject *py_scan_request(PyObject *self, PyObject *args) {
    PyObject *bytes, *target;
    if (!PyArg_ParseTuple(args, "OO", &bytes, &target)) return NULL;
    /* the body ends in a NUL, which stops every scan below */
    const char *body;
    Py_ssize_t size;
    if (nul_terminated(bytes, &body, &size) < 0) return NULL;
    const char *end = body + size;
    parsed_t parsed;
    Py_buffer view;
    if (output_buffer(target, &view, &parsed) < 0) return NULL;
    PyObject *found = PyList_New(0);
    if (found == NULL) goto unusual;
    int seen_inputs = 0;
    const char *p = skip_ws(body);
    if (*p != '{') goto unusual;
    p = skip_ws(p + 1);
    if (*p == '}') goto done;
    for (;;) {
        const char *key;
        Py_ssize_t len;
        p = read_key(p, end, &key, &len);
        if (p == NULL) goto unusual;
        p = skip_ws(p);
        if (*p != ':') goto unusual;
        p = skip_ws(p + 1);
        int is_inputs = key_is(key, len, "inputs");
        if (is_inputs && seen_inputs) goto unusual;
        seen_inputs |= is_inputs;
        if (is_inputs && *p == '[') {
            p = skip_ws(p + 1);
            Py_ssize_t index = 0;
            if (*p == ']') p++;
            else for (;;) {
                p = *p == '{' ? scan_input(p, end, index, body, &parsed, found) : skip_value(p, end);
                if (p == NULL) goto unusual;
                index++;
                p = skip_ws(p);
                if (*p == ']') {
                    p++;
                    break;
                }
                if (*p != ',') goto unusual;
                p = skip_ws(p + 1);
            }
        } else {
            p = skip_value(p, end);
            if (p == NULL) goto unusual;
        }
        p = skip_ws(p);
        if (*p == '}') break;
        if (*p != ',') goto unusual;
        p = skip_ws(p + 1);
    }
done:
    PyBuffer_Release(&view);
    return found;
unusual:
    PyBuffer_Release(&view);
    Py_XDECREF(found);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

/* -- the plain request ------------------------------------------------------ */

typedef enum { DT_FP64 = 0, DT_FP32, DT_INT64, DT_BOOL, DT_COUNT } plain_dtype_t;
static const char *const DT_NAMES[DT_COUNT] = {"FP64", "FP32", "INT64", "BOOL"};
static PyObject *DT_OBJECTS[DT_COUNT];

/* A JSON string at p (its opening quote) holding no escape and no control
 * character: its raw bytes; NULL for any other string (orjson then decides). */
static const char *plain_string(const char *p, const char *end, const char **text, Py_ssize_t *len) {
    if (*p != '"') return NULL;
    const char *start = ++p;
    while (p < end && *p != '"') {
        if (*p == '\\' || (unsigned char)*p < 0x20) return NULL;
        p++;
    }
    if (p >= end) return NULL;
    *text = start;
    *len = p - start;
    return p + 1;
}

/* A member of an object at p ("key" : value): its key's raw bytes, and where
 * its value starts; NULL when the key is not plain (plain_string). */
static const char *plain_key(const char *p, const char *end, const char **key, Py_ssize_t *len) {
    p = plain_string(p, end, key, len);
    if (p == NULL) return NULL;
    p = skip_ws(p);
    return *p == ':' ? skip_ws(p + 1) : NULL;
}

/* After a member's value at *pp: 1 and *pp at the next member, 0 and *pp at
 * the object's closing brace, or -1 for anything else. */
static int plain_next(const char **pp) {
    const char *p = skip_ws(*pp);
    *pp = p;
    if (*p == '}') return 0;
    if (*p != ',') return -1;
    *pp = skip_ws(p + 1);
    return 1;
}

/* A shape: a non-empty list of at most MAX_DEPTH positive integers whose product
 * fits int64 (its elements, in *count). */
static const char *plain_shape(const char *p, const char *end, PyObject **shape, int64_t *count) {
    int64_t dims[MAX_DEPTH];
    int ndim = 0;
    int64_t product = 1;
    if (*p != '[') return NULL;
    p = skip_ws(p + 1);
    for (;;) {
        /* a JSON integer from 1 to 10^18 - 1 (no leading zero), of up to 18 digits */
        int64_t dim = 0;
        int digits = 0;
        if (*p == '0') return NULL;
        while (is_digit(*p) && digits < 18) dim = dim * 10 + (*p++ - '0'), digits++;
        if (digits == 0 || is_digit(*p) || *p == '.' || *p == 'e' || *p == 'E' || ndim == MAX_DEPTH ||
            __builtin_mul_overflow(product, dim, &product))
            return NULL;
        dims[ndim++] = dim;
        p = skip_ws(p);
        if (*p == ']') break;
        if (*p != ',') return NULL;
        p = skip_ws(p + 1);
    }
    PyObject *tuple = PyTuple_New(ndim);
    if (tuple == NULL) return NULL;
    for (int i = 0; i < ndim; i++) {
        PyObject *dim = PyLong_FromLongLong(dims[i]);
        if (dim == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, dim);
    }
    *shape = tuple;
    *count = product;
    return p + 1;
}

/* What the parsed array becomes for the datatype, in place: 1, or 0 when the
 * general path must decide (values of another kind, or FP32 overflow). */
static int plain_convert(char *base, Py_ssize_t count, kind_t kind, plain_dtype_t datatype) {
    switch (datatype) {
    case DT_FP64:
        if (kind == KIND_INT) ints_to_floats(base, count);
        return kind != KIND_BOOL;
    case DT_INT64:
        return kind == KIND_INT;
    case DT_BOOL:
        return kind == KIND_BOOL;
    case DT_FP32:
        if (kind == KIND_BOOL) return 0;
        /* forwards: float i lands on bytes 4i..4i+3, within slots already read */
        for (Py_ssize_t i = 0; i < count; i++) {
            float f;
            if (kind == KIND_INT) {
                int64_t v;
                memcpy(&v, base + i * 8, 8);
                f = (float)v;
            } else {
                double d;
                memcpy(&d, base + i * 8, 8);
                f = (float)d;
                if (f - f != 0.0f) return 0; /* overflow: the general path words it */
            }
            memcpy(base + i * 4, &f, 4);
        }
        return 1;
    default:
        return 0;
    }
}

typedef struct {
    PyObject *name, *shape, *data, *id;
    plain_dtype_t datatype;
    int64_t elements;
} plain_t;

static void plain_clear(plain_t *plain) {
    Py_CLEAR(plain->name);
    Py_CLEAR(plain->shape);
    Py_CLEAR(plain->data);
    Py_CLEAR(plain->id);
}

/* The one inputs[] entry, an object at p of exactly name, shape, datatype, data. */
static const char *plain_input(const char *p, const char *end, Py_ssize_t size, plain_t *plain) {
    int seen = 0; /* bits: name 1, shape 2, datatype 4, data 8 */
    kind_t kind = KIND_BOOL;
    Py_ssize_t count = 0;
    if (*p != '{') return NULL;
    p = skip_ws(p + 1);
    for (int more = 1; more;) {
        const char *key, *text;
        Py_ssize_t len, text_len;
        if ((p = plain_key(p, end, &key, &len)) == NULL) return NULL;
        if (key_is(key, len, "name") && !(seen & 1)) {
            seen |= 1;
            if ((p = plain_string(p, end, &text, &text_len)) == NULL) return NULL;
            plain->name = PyUnicode_DecodeUTF8(text, text_len, NULL);
            if (plain->name == NULL) return NULL;
        } else if (key_is(key, len, "shape") && !(seen & 2)) {
            seen |= 2;
            if ((p = plain_shape(p, end, &plain->shape, &plain->elements)) == NULL) return NULL;
        } else if (key_is(key, len, "datatype") && !(seen & 4)) {
            seen |= 4;
            if ((p = plain_string(p, end, &text, &text_len)) == NULL) return NULL;
            plain_dtype_t d = 0;
            while (d < DT_COUNT && !key_is(text, text_len, DT_NAMES[d])) d++;
            if (d == DT_COUNT) return NULL;
            plain->datatype = d;
        } else if (key_is(key, len, "data") && !(seen & 8)) {
            seen |= 8;
            /* every number takes at least two bytes (itself and a separator) */
            plain->data = PyByteArray_FromStringAndSize(NULL, (size / 2 + 1) * 8);
            if (plain->data == NULL) return NULL;
            parsed_t parsed = {PyByteArray_AS_STRING(plain->data), size / 2 + 1, 0, 0, KIND_BOOL, 0, {0}};
            if (!parse_array(&p, end, &parsed)) return NULL; /* at most MAX_DEPTH dimensions */
            kind = parsed.kind;
            count = parsed.count;
        } else {
            return NULL; /* another key, or one sent twice */
        }
        if ((more = plain_next(&p)) < 0) return NULL;
    }
    if (seen != 15 || count != plain->elements ||
        !plain_convert(PyByteArray_AS_STRING(plain->data), count, kind, plain->datatype))
        return NULL;
    Py_ssize_t itemsize = plain->datatype == DT_BOOL ? 1 : plain->datatype == DT_FP32 ? 4 : 8;
    if (PyByteArray_Resize(plain->data, count * itemsize) < 0) return NULL;
    return p + 1;
}

/*
 * plain_request(body) -> (name, shape, datatype, data, id) | None
 *
 * The commonest V2 request, decoded whole: an object of "inputs" (one entry of
 * exactly name, shape, datatype and data) and at most an "id" (a string or
 * null), in any order, datatype FP64, FP32, INT64 or BOOL, and data a numeric
 * array of that datatype's kind with as many elements as the shape's positive
 * dimensions multiply to. data is a bytearray of the tensor's values (float64,
 * float32, int64 or one byte per bool), exactly what the general path makes of
 * the same text. Anything else, including valid JSON of another form, escaped
 * strings and keys sent twice, answers None: the general path decides.
 */
static PyObject *py_plain_request(PyObject *self, PyObject *arg) {
    const char *body;
    Py_ssize_t size;
    if (nul_terminated(arg, &body, &size) < 0) return NULL;
    const char *end = body + size;
    plain_t plain = {NULL, NULL, NULL, NULL, DT_FP64, 0};
    int seen_inputs = 0;
    const char *p = skip_ws(body);
    if (*p != '{') goto other;
    p = skip_ws(p + 1);
    for (int more = 1; more;) {
        const char *key, *text;
        Py_ssize_t len, text_len;
        if ((p = plain_key(p, end, &key, &len)) == NULL) goto other;
        if (key_is(key, len, "inputs") && !seen_inputs) {
            seen_inputs = 1;
            if (*p != '[') goto other;
            p = plain_input(skip_ws(p + 1), end, size, &plain);
            if (p == NULL) goto other;
            p = skip_ws(p);
            if (*p != ']') goto other;
            p++;
        } else if (key_is(key, len, "id") && plain.id == NULL) {
            if (*p == 'n' && end - p >= 4 && memcmp(p, "null", 4) == 0) {
                plain.id = Py_NewRef(Py_None);
                p += 4;
            } else {
                if ((p = plain_string(p, end, &text, &text_len)) == NULL) goto other;
                plain.id = PyUnicode_DecodeUTF8(text, text_len, NULL);
                if (plain.id == NULL) goto other;
            }
        } else {
            goto other;
        }
        if ((more = plain_next(&p)) < 0) goto other;
    }
    if (!seen_inputs || skip_ws(p + 1) != end) goto other;
    PyObject *result = PyTuple_Pack(5, plain.name, plain.shape, DT_OBJECTS[plain.datatype], plain.data,
                                    plain.id == NULL ? Py_None : plain.id);
    plain_clear(&plain);
    return result;
other:
    plain_clear(&plain);
    if (PyErr_Occurred()) {
        /* only running out of memory is an error; undecodable text is the general path's */
        if (!PyErr_ExceptionMatches(PyExc_MemoryError)) PyErr_Clear();
        else return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef METHODS[] = {
    {"scan_request", py_scan_request, METH_VARARGS,
     "scan_request(body, out) -> [(input index, (start, end, byte offset, kind, shape))] or None"},
    {"plain_request", py_plain_request, METH_O,
     "plain_request(body) -> (name, shape, datatype, data, id) or None"},
    {"parse_array", py_parse_array, METH_VARARGS,
     "parse_array(body, offset, out) -> (start, end, byte offset, kind, shape) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_numbers",
    "Numeric JSON arrays of V2 requests parsed straight into buffers.", -1, METHODS,
};

PyMODINIT_FUNC PyInit__numbers(void) {
#if LDBL_MANT_DIG == 64
    LPOW10[0] = 1.0L;
    for (int i = 1; i <= LPOW10_MAX; i++) LPOW10[i] = LPOW10[i - 1] * 10.0L; /* exact */
#endif
    const char *names[3] = {"b", "i", "f"};
    for (int i = 0; i < 3; i++) {
        if (KIND_NAMES[i] == NULL) KIND_NAMES[i] = PyUnicode_InternFromString(names[i]);
        if (KIND_NAMES[i] == NULL) return NULL;
    }
    for (int i = 0; i < DT_COUNT; i++) {
        if (DT_OBJECTS[i] == NULL) DT_OBJECTS[i] = PyUnicode_InternFromString(DT_NAMES[i]);
        if (DT_OBJECTS[i] == NULL) return NULL;
    }
    return PyModule_Create(&MODULE);
}
