/* CSV straight from SQLite, in C: the SQLite provider's plain-CSV path (sqlite.py).
 *
 * Reader(uri, delimiter, timeout_s) opens its own read-only connection; execute(sql, params)
 * prepares one statement and binds its parameters; read(max_rows, max_bytes, head) steps up to
 * max_rows rows (fewer once the batch holds max_bytes) and returns them as one block of UTF-8
 * CSV (bytes, after `head`: the header line) with the row count, with the GIL released for the
 * whole batch, so the event loop and the file writer run meanwhile. Text values are checked to
 * be UTF-8 there too (sqlite3.DataError "Could not decode to UTF-8 ..." if not); a BLOB is
 * written as \x and its bytes in lowercase hex, as PostgreSQL's COPY writes a bytea.
 *
 * The dialect is the provider's: minimal quoting with "\n" line ends (a field holding the
 * delimiter, a quote, a line feed or a carriage return is quoted, its quotes doubled; a row of
 * one empty field is written ""), NULL as nothing, integers and text as SQLite writes them, and
 * a REAL as SQLite's own 15-digit text when that reads back as the same double (`plain_real`
 * finds it without SQLite's slow conversion for most values), else the fewest of 16 or 17
 * significant digits that do; -0.0 keeps its sign. Numbers are written and parsed in the "C"
 * locale whatever LC_NUMERIC says (uselocale, on the reading thread only).
 *
 * interrupt() (any thread) and the timeout stop a running read through SQLite's progress
 * handler: it then raises sqlite3.OperationalError("interrupted") and `timed_out` tells which.
 * Errors are the sqlite3 module's exceptions with SQLite's message.
 * One thread at a time opens, executes, reads and closes (`busy` refuses the others).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <locale.h>
#include <math.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    sqlite3 *db;
    sqlite3_stmt *stmt; /* NULL: an empty script (no rows) */
    int ncols;
    int done;
    int failed; /* a read raised: later reads raise too instead of looking like the end */
    int busy; /* an open, prepare or read is running (with the GIL released) */
    char delim[8];
    size_t delim_len;
    double deadline; /* CLOCK_MONOTONIC seconds */
    atomic_int stopped;
    int timed_out;
    char *buf; /* kept between reads: one allocation for the whole result */
    size_t len, cap;
} Reader;

static PyObject *sqlite_module;
static locale_t c_locale; /* numbers are written and parsed in the "C" locale */

#define NOT_UTF8 (-2) /* put_row's code of a value that is not UTF-8 */

static double monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int progress(void *arg) {
    Reader *self = arg;
    if (atomic_load(&self->stopped))
        return 1;
    if (monotonic() > self->deadline) {
        self->timed_out = 1;
        return 1;
    }
    return 0;
}

/* Raise the sqlite3 module's exception `name` with `message`. */
static void raise_as(const char *name, const char *message) {
    PyObject *type = PyObject_GetAttrString(sqlite_module, name);
    if (type != NULL) {
        PyErr_SetString(type, message);
        Py_DECREF(type);
    }
}

static void raise_sqlite(Reader *self, int rc) {
    int code = rc & 0xff;
    if (code == SQLITE_NOMEM) {
        PyErr_NoMemory();
        return;
    }
    raise_as(code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? "DatabaseError" : "OperationalError",
             self->db ? sqlite3_errmsg(self->db) : sqlite3_errstr(rc));
}

static int reserve(Reader *self, size_t more) {
    if (more > SIZE_MAX - self->len)
        return -1;
    size_t need = self->len + more;
    if (need <= self->cap)
        return 0;
    size_t cap = self->cap ? self->cap : 1 << 16;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(self->buf, cap);
    if (p == NULL)
        return -1;
    self->buf = p;
    self->cap = cap;
    return 0;
}

static void append(Reader *self, const char *s, size_t n) {
    if (n == 0)
        return; /* s may be NULL */
    memcpy(self->buf + self->len, s, n);
    self->len += n;
}

static int needs_quotes(Reader *self, const char *s, size_t n) {
    if (self->delim_len == 1) {
        char d = self->delim[0];
        for (size_t i = 0; i < n; i++)
            if (s[i] == d || s[i] == '"' || s[i] == '\n' || s[i] == '\r')
                return 1;
        return 0;
    }
    if (memchr(s, '"', n) || memchr(s, '\n', n) || memchr(s, '\r', n))
        return 1;
    return n >= self->delim_len && memmem(s, n, self->delim, self->delim_len) != NULL;
}

/* Whether s[0..n) is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF), as
 * bytes.decode() checks it; ASCII is skipped eight bytes at a time. */
static int is_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            unsigned long long w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        unsigned char lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else {
            return 0;
        }
        if (i + k >= n) /* cut short */
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t j = 2; j <= k; j++)
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

static int put_text(Reader *self, const char *s, size_t n) {
    if (n == 0)
        return 0;
    if (!needs_quotes(self, s, n)) {
        if (reserve(self, n))
            return -1;
        append(self, s, n);
        return 0;
    }
    if (reserve(self, 2 * n + 2))
        return -1;
    self->buf[self->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"')
            self->buf[self->len++] = '"';
        self->buf[self->len++] = s[i];
    }
    self->buf[self->len++] = '"';
    return 0;
}

static const double powers_of_ten[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* The text of `v` in plain notation with the fewest decimals (at most 15 significant digits)
 * that reads back as `v`, into `out`; 0 when there is none or `v` is outside 1e-4 <= |v| <
 * 1e15. It is what SQLite's printf('%!.15g') writes for such a value ("12.5", "100.0"),
 * without its slow conversion: R / 10^d is exact arithmetic on two exact doubles, so when it
 * equals `v` the decimal R.10^-d reads back as `v`; and a decimal of at most 15 significant
 * digits is the one that 15-digit printing of the double it reads as gives back (DBL_DIG). */
static int plain_real(double v, char *out) {
    double a = v < 0 ? -v : v;
    if (!(a >= 1e-4 && a < 1e15))
        return 0;
    for (int d = 0; d < 23; d++) {
        double scaled = a * powers_of_ten[d];
        if (scaled >= 1e15)
            return 0;
        double r = nearbyint(scaled);
        if (r / powers_of_ten[d] != a)
            continue;
        char digits[24];
        int k = snprintf(digits, sizeof digits, "%llu", (unsigned long long)r);
        int n = 0;
        if (v < 0)
            out[n++] = '-';
        if (k <= d) { /* 0.000ddd */
            out[n++] = '0';
            out[n++] = '.';
            for (int z = 0; z < d - k; z++)
                out[n++] = '0';
            memcpy(out + n, digits, (size_t)k);
            n += k;
        } else {
            memcpy(out + n, digits, (size_t)(k - d));
            n += k - d;
            out[n++] = '.';
            if (d) {
                memcpy(out + n, digits + k - d, (size_t)d);
                n += d;
            } else {
                out[n++] = '0';
            }
        }
        return n;
    }
    return 0;
}

/* SQLite's text of the REAL (15 significant digits) when it reads back as the same double,
 * else 16 or 17 digits as SQLite's printf('%!.Ng') writes them: with ".0" when there is no
 * decimal point ("1.0e+16", "100.0"). Most values take `plain_real`. */
static int put_real(Reader *self, int i) {
    double v = sqlite3_column_double(self->stmt, i);
    char tmp[48];
    int k = plain_real(v, tmp);
    if (v == 0) { /* "0.0", or "-0.0" with its sign (SQLite's own text drops it) */
        k = signbit(v) ? 4 : 3;
        memcpy(tmp, signbit(v) ? "-0.0" : "0.0", (size_t)k);
    }
    if (k) /* quoted too when the delimiter is one of its characters ('.', '-', a digit) */
        return put_text(self, tmp, (size_t)k);
    const char *text = (const char *)sqlite3_column_text(self->stmt, i);
    size_t n = (size_t)sqlite3_column_bytes(self->stmt, i);
    if (text == NULL) /* out of memory */
        return -1;
    if (strtod(text, NULL) != v) {
        for (int digits = 16; digits <= 17; digits++) {
            k = snprintf(tmp, 40, "%.*g", digits, v);
            if (strtod(tmp, NULL) == v)
                break;
        }
        if (strchr(tmp, '.') == NULL) {
            char *e = strchr(tmp, 'e');
            if (e != NULL) {
                memmove(e + 2, e, strlen(e) + 1);
                e[0] = '.';
                e[1] = '0';
            } else {
                memcpy(tmp + k, ".0", 3);
            }
            k += 2;
        }
        text = tmp;
        n = (size_t)k;
    }
    return put_text(self, text, n);
}

/* A BLOB as \x and its bytes in lowercase hex, as PostgreSQL's COPY writes a bytea (and
 * csvcodec.CsvEncoder any bytes value), quoted only when the delimiter is one of those
 * characters (nothing in it to double). -1 when out of memory. */
static int put_blob(Reader *self, int i) {
    static const char digits[] = "0123456789abcdef";
    const unsigned char *b = sqlite3_column_blob(self->stmt, i);
    size_t n = (size_t)sqlite3_column_bytes(self->stmt, i);
    if (b == NULL && n)
        return -1;
    int quote = self->delim_len == 1 && self->delim[0] != '\0' &&
                strchr("\\x0123456789abcdef", self->delim[0]) != NULL;
    size_t size = 2 + 2 * n + (quote ? 2 : 0);
    if (reserve(self, size))
        return -1;
    char *out = self->buf + self->len;
    if (quote)
        *out++ = '"';
    *out++ = '\\';
    *out++ = 'x';
    for (size_t k = 0; k < n; k++) {
        *out++ = digits[b[k] >> 4];
        *out++ = digits[b[k] & 15];
    }
    if (quote)
        *out++ = '"';
    self->len += size;
    return 0;
}

/* One row as a CSV line; SQLITE_NOMEM when out of memory, NOT_UTF8 for a value that is not
 * UTF-8. */
static int put_row(Reader *self) {
    sqlite3_stmt *st = self->stmt;
    for (int i = 0; i < self->ncols; i++) {
        if (i) {
            if (reserve(self, self->delim_len))
                return SQLITE_NOMEM;
            append(self, self->delim, self->delim_len);
        }
        int type = sqlite3_column_type(st, i);
        if (type == SQLITE_NULL)
            continue;
        if (type == SQLITE_FLOAT) {
            if (put_real(self, i))
                return SQLITE_NOMEM;
            continue;
        }
        if (type == SQLITE_BLOB) {
            if (put_blob(self, i))
                return SQLITE_NOMEM;
            continue;
        }
        /* INTEGER and TEXT */
        const char *text = (const char *)sqlite3_column_text(st, i);
        size_t n = (size_t)sqlite3_column_bytes(st, i);
        /* NULL for a value that is not NULL: out of memory (or a zero-length BLOB) */
        if (text == NULL && (n || sqlite3_errcode(self->db) == SQLITE_NOMEM))
            return SQLITE_NOMEM;
        if (type != SQLITE_INTEGER && !is_utf8((const unsigned char *)text, n))
            return NOT_UTF8;
        if (put_text(self, text, n))
            return SQLITE_NOMEM;
    }
    if (reserve(self, 3)) /* room for the "" of an empty row (Reader_read) */
        return SQLITE_NOMEM;
    self->buf[self->len++] = '\n';
    return SQLITE_OK;
}

/* RuntimeError when another thread is opening, preparing or reading (GIL released). */
static int refuse_busy(Reader *self) {
    if (!self->busy)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "Reader is busy on another thread");
    return -1;
}

static PyObject *Reader_read(Reader *self, PyObject *args) {
    Py_ssize_t max_rows, max_bytes;
    Py_buffer head = {0};
    if (!PyArg_ParseTuple(args, "nn|y*:read", &max_rows, &max_bytes, &head))
        return NULL;
    PyObject *result = NULL;
    if (max_rows < 1 || max_bytes < 1) {
        PyErr_SetString(PyExc_ValueError, "max_rows and max_bytes must be at least 1");
        goto out;
    }
    if (refuse_busy(self))
        goto out;
    if (self->db == NULL) {
        raise_as("ProgrammingError", "Cannot operate on a closed database.");
        goto out;
    }
    if (self->failed) {
        raise_as("ProgrammingError", "An earlier read of this result failed.");
        goto out;
    }
    Py_ssize_t rows = 0;
    int rc = SQLITE_DONE;
    self->len = 0;
    if (!self->done && self->stmt != NULL) {
        if (reserve(self, (size_t)head.len)) {
            PyErr_NoMemory();
            goto out;
        }
        append(self, head.buf, (size_t)head.len);
        size_t limit = (size_t)head.len + (size_t)max_bytes;
        self->busy = 1;
        Py_BEGIN_ALLOW_THREADS
        locale_t previous = uselocale(c_locale);
        while (rows < max_rows && self->len < limit) {
            rc = sqlite3_step(self->stmt);
            if (rc != SQLITE_ROW)
                break;
            size_t start = self->len;
            rc = put_row(self);
            if (rc != SQLITE_OK)
                break;
            /* csv.writer writes a row of one empty field as "" (an empty line is no row) */
            if (self->len - start == 1) {
                self->buf[start] = '"';
                self->buf[start + 1] = '"';
                self->buf[start + 2] = '\n';
                self->len = start + 3;
            }
            rows++;
            rc = SQLITE_ROW;
        }
        uselocale(previous);
        Py_END_ALLOW_THREADS
        self->busy = 0;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        self->done = self->failed = 1;
        if (rc == NOT_UTF8)
            raise_as("DataError", "Could not decode to UTF-8: a value is not UTF-8 text");
        else
            raise_sqlite(self, rc);
        goto out;
    }
    if (rc == SQLITE_DONE)
        self->done = 1;
    if (rows == 0)
        self->len = 0; /* no rows: no header either */
    PyObject *chunk = PyBytes_FromStringAndSize(self->buf ? self->buf : "", (Py_ssize_t)self->len);
    if (self->cap > (1 << 24)) { /* a batch of huge rows: do not keep its buffer */
        free(self->buf);
        self->buf = NULL;
        self->cap = 0;
    }
    if (chunk != NULL)
        result = Py_BuildValue("Nn", chunk, rows);
    if (result == NULL) /* the batch's rows were stepped past: no read may silently skip them */
        self->done = self->failed = 1;
out:
    if (head.obj != NULL)
        PyBuffer_Release(&head);
    return result;
}

static PyObject *Reader_interrupt(Reader *self, PyObject *Py_UNUSED(ignored)) {
    atomic_store(&self->stopped, 1);
    Py_RETURN_NONE;
}

static void reader_close(Reader *self) {
    if (self->stmt != NULL)
        sqlite3_finalize(self->stmt);
    self->stmt = NULL;
    if (self->db != NULL)
        sqlite3_close_v2(self->db);
    self->db = NULL;
    free(self->buf);
    self->buf = NULL;
    self->cap = self->len = 0;
}

static PyObject *Reader_close(Reader *self, PyObject *Py_UNUSED(ignored)) {
    if (refuse_busy(self))
        return NULL;
    reader_close(self);
    Py_RETURN_NONE;
}

static int bind(Reader *self, PyObject *params) {
    PyObject *seq = PySequence_Fast(params, "params must be a sequence");
    if (seq == NULL)
        return -1;
    Py_ssize_t given = PySequence_Fast_GET_SIZE(seq);
    int wanted = self->stmt ? sqlite3_bind_parameter_count(self->stmt) : 0;
    if (given != wanted) {
        PyObject *type = PyObject_GetAttrString(sqlite_module, "ProgrammingError");
        if (type != NULL) {
            PyErr_Format(type,
                         "Incorrect number of bindings supplied. The current statement uses %d, "
                         "and there are %zd supplied.",
                         wanted, given);
            Py_DECREF(type);
        }
        Py_DECREF(seq);
        return -1;
    }
    for (Py_ssize_t i = 0; i < given; i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(seq, i);
        int at = (int)i + 1, rc;
        if (v == Py_None) {
            rc = sqlite3_bind_null(self->stmt, at);
        } else if (PyLong_Check(v)) {
            long long n = PyLong_AsLongLong(v);
            if (n == -1 && PyErr_Occurred())
                goto fail;
            rc = sqlite3_bind_int64(self->stmt, at, n);
        } else if (PyFloat_Check(v)) {
            rc = sqlite3_bind_double(self->stmt, at, PyFloat_AS_DOUBLE(v));
        } else if (PyUnicode_Check(v)) {
            Py_ssize_t n;
            const char *s = PyUnicode_AsUTF8AndSize(v, &n);
            if (s == NULL)
                goto fail;
            /* Without a NUL inside, by its terminator: SQLite then keeps the copy terminated,
             * and reading the value as text in every row needs no copy of its own. */
            if (strlen(s) == (size_t)n)
                rc = sqlite3_bind_text(self->stmt, at, s, -1, SQLITE_TRANSIENT);
            else
                rc = sqlite3_bind_text64(self->stmt, at, s, (sqlite3_uint64)n, SQLITE_TRANSIENT,
                                         SQLITE_UTF8);
        } else if (PyBytes_Check(v)) {
            rc = sqlite3_bind_blob64(self->stmt, at, PyBytes_AS_STRING(v),
                                     (sqlite3_uint64)PyBytes_GET_SIZE(v), SQLITE_TRANSIENT);
        } else {
            PyErr_Format(PyExc_TypeError, "parameter %zd: unsupported type %.100s", i + 1,
                         Py_TYPE(v)->tp_name);
            goto fail;
        }
        if (rc != SQLITE_OK) {
            raise_sqlite(self, rc);
            goto fail;
        }
    }
    Py_DECREF(seq);
    return 0;
fail:
    Py_DECREF(seq);
    return -1;
}

static int Reader_init(Reader *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"uri", "delimiter", "timeout_s", NULL};
    const char *uri, *delim;
    Py_ssize_t delim_len;
    double timeout_s;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "ss#d", names, &uri, &delim, &delim_len,
                                     &timeout_s))
        return -1;
    if (refuse_busy(self))
        return -1;
    if (self->db != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Reader is already open");
        return -1;
    }
    if (delim_len < 1 || (size_t)delim_len >= sizeof self->delim) {
        PyErr_SetString(PyExc_ValueError, "delimiter must be one character");
        return -1;
    }
    memcpy(self->delim, delim, (size_t)delim_len);
    self->delim_len = (size_t)delim_len;
    self->deadline = monotonic() + timeout_s;
    int rc;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = sqlite3_open_v2(uri, &self->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(self->db, 5000); /* as sqlite3.connect's default */
        sqlite3_progress_handler(self->db, 10000, progress, self);
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (rc != SQLITE_OK) {
        raise_sqlite(self, rc);
        reader_close(self);
        return -1;
    }
    return 0;
}

static PyObject *Reader_execute(Reader *self, PyObject *args) {
    const char *sql, *tail = NULL;
    Py_ssize_t sql_len;
    PyObject *params;
    if (!PyArg_ParseTuple(args, "s#O:execute", &sql, &sql_len, &params))
        return NULL;
    if (refuse_busy(self))
        return NULL;
    if (self->db == NULL) {
        raise_as("ProgrammingError", "Cannot operate on a closed database.");
        return NULL;
    }
    if (self->stmt != NULL || self->done) {
        PyErr_SetString(PyExc_RuntimeError, "Reader.execute runs one statement");
        return NULL;
    }
    if (sql_len > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "the script is too long");
        return NULL;
    }
    int rc, more = 0;
    sqlite3_stmt *stmt = NULL;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = sqlite3_prepare_v2(self->db, sql, (int)sql_len, &stmt, &tail);
    /* One statement only, as the sqlite3 module's execute(). */
    if (rc == SQLITE_OK && tail != NULL && *tail) {
        sqlite3_stmt *next = NULL;
        int rc2 = sqlite3_prepare_v2(self->db, tail, -1, &next, NULL);
        more = next != NULL || rc2 != SQLITE_OK;
        sqlite3_finalize(next);
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (rc != SQLITE_OK) {
        raise_sqlite(self, rc);
        return NULL;
    }
    self->stmt = stmt;
    if (more)
        raise_as("ProgrammingError", "You can only execute one statement at a time.");
    if (more || bind(self, params)) {
        sqlite3_finalize(self->stmt);
        self->stmt = NULL;
        return NULL;
    }
    self->ncols = self->stmt ? sqlite3_column_count(self->stmt) : 0;
    if (self->stmt == NULL)
        self->done = 1;
    Py_RETURN_NONE;
}

static PyObject *Reader_columns(Reader *self, void *Py_UNUSED(closure)) {
    if (refuse_busy(self))
        return NULL;
    PyObject *list = PyList_New(self->ncols);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < self->ncols; i++) {
        const char *name = self->stmt ? sqlite3_column_name(self->stmt, i) : NULL;
        PyObject *s = PyUnicode_FromString(name ? name : "");
        if (s == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, s);
    }
    return list;
}

static PyObject *Reader_timed_out(Reader *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->timed_out);
}

static void Reader_dealloc(Reader *self) {
    reader_close(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Reader_methods[] = {
    {"read", (PyCFunction)Reader_read, METH_VARARGS,
     "read(max_rows, max_bytes, head=b'') -> (csv bytes, rows): up to max_rows rows, the batch\n"
     "ending with the row that takes it past max_bytes, after head; (b'', 0) at the end."},
    {"execute", (PyCFunction)Reader_execute, METH_VARARGS,
     "execute(sql, params): prepare the one statement of sql and bind params (a sequence)."},
    {"interrupt", (PyCFunction)Reader_interrupt, METH_NOARGS,
     "Stop a running read (from any thread); later reads fail too."},
    {"close", (PyCFunction)Reader_close, METH_NOARGS, "Finalize the statement, close."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Reader_getset[] = {
    {"columns", (getter)Reader_columns, NULL, "The result's column names.", NULL},
    {"timed_out", (getter)Reader_timed_out, NULL, "Whether the timeout stopped a read.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "exporter_api.providers._sqlitecsv.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One read-only query's rows as CSV (see the module's comment).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
    .tp_getset = Reader_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_sqlitecsv", "CSV straight from SQLite (see Reader).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__sqlitecsv(void) {
    if (c_locale == (locale_t)0) {
        c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
        if (c_locale == (locale_t)0)
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    sqlite_module = PyImport_ImportModule("sqlite3");
    if (sqlite_module == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
