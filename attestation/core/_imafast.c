/* attestation._imafast: the verifier's IMA hot loop in C, optional.
 *
 * One round walks the new binary log entries, replays PCR 10 in every quoted bank and judges each
 * covered entry's (path, digest) against its owner's policy table. In Python that costs ~2.3 us an
 * entry (a Python object per field, two hashlib calls, two lookups); here it is the two SHA-256
 * calls and the two lookups, nothing else.
 *
 * The Python code stays the reference (attestation/core/logcheck.py). This module answers only the
 * common case and says None for everything else, and the caller then runs the reference:
 *   - any entry that is malformed, or of a template other than ima-ng, ima-sig and ima-cgpath
 *     (the reference raises ImaParseError with its exact message, so no error text is ever made
 *     here); names (paths, cgroup paths) are bytes, UTF-8 or not, and never make it decline;
 *   - a replay that does not reach the quoted PCR 10 in every bank (ima.pcr_mismatch is
 *     rare and its message comes from the reference too);
 *   - a covered entry whose template-hash column is not H(template data) in the column's
 *     algorithm (ima.template_hash_mismatch, as the reference's replay.template_hash_mismatch);
 *   - an OpenSSL failure.
 * The checks below are those of attestation/core/ima/entry.py (the general parser), in the same
 * order as far as they decide between "stop before a partial trailing entry" and "malformed".
 *
 * Every length read from the log is compared against what is left of the buffer before use, as a
 * difference (n - pos < len), never as a sum that could overflow. The buffer is a bytes object
 * (immutable), held for the whole call.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <string.h>

#if OPENSSL_VERSION_NUMBER < 0x30000000L
#error "attestation._imafast needs OpenSSL 3 (EVP_MD_fetch); without it the pure path is used"
#endif

/* the caps of attestation/core/ima/entry.py */
#define MAX_TEMPLATE_NAME 15
#define MAX_PATH 4096
#define MAX_FIELD (64 * 1024)
#define MAX_TEMPLATE_DATA (256 * 1024)
#define MIN_DIGEST 16
#define MAX_DIGEST 64
#define IMA_PCR 10
#define MAX_BANKS 4

enum { REJECT = -1, PARTIAL = 0, OK = 1 };

typedef struct {
    const unsigned char *p;
    Py_ssize_t n;
} Span;

typedef struct {
    Py_ssize_t end;
    uint32_t pcr;
    const unsigned char *column;
    Span data, path, digest;
    Span cgroup; /* p == NULL: the template has no cgroup field */
} Entry;

typedef struct {
    EVP_MD *md;
    EVP_MD_CTX *ctx;
    size_t size;
    unsigned char pcr[EVP_MAX_MD_SIZE];
    unsigned char quoted[EVP_MAX_MD_SIZE];
    Py_ssize_t quoted_size; /* may differ from size: then it is never reached */
} Bank;

static uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One ``u32 len || bytes`` template field at *pos of data (ima/entry.py: read_field). */
static int
take_field(Span data, Py_ssize_t *pos, Span *out)
{
    if (data.n - *pos < 4)
        return REJECT;
    uint32_t len = le32(data.p + *pos);
    if (len > MAX_FIELD || (Py_ssize_t)len > data.n - *pos - 4)
        return REJECT;
    out->p = data.p + *pos + 4;
    out->n = len;
    *pos += 4 + (Py_ssize_t)len;
    return OK;
}

/* A NUL-terminated string field (ima/entry.py: _string). */
static int
take_string(Span field, Py_ssize_t cap, Span *out)
{
    if (field.n == 0 || field.p[field.n - 1] != 0 || field.n > cap + 1)
        return REJECT;
    out->p = field.p;
    out->n = field.n - 1;
    return OK;
}

static int
is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* d-ng: ``algo ":" NUL digest``, or a bare 16/20-byte digest (ima/entry.py: _digest_ng). */
static int
take_digest(Span field, Span *digest)
{
    Py_ssize_t colon = -1;
    for (Py_ssize_t i = 0; i + 1 < field.n; i++) {
        if (field.p[i] == ':' && field.p[i + 1] == 0) {
            colon = i;
            break;
        }
    }
    if (colon < 0) {
        if (field.n != 16 && field.n != 20)
            return REJECT;
        *digest = field;
        return OK;
    }
    int letters = 0; /* bytes.isalnum() of the name without '-' and '_': ASCII, non-empty */
    for (Py_ssize_t i = 0; i < colon; i++) {
        unsigned char c = field.p[i];
        if (is_alnum(c))
            letters++;
        else if (c != '-' && c != '_')
            return REJECT;
    }
    digest->p = field.p + colon + 2;
    digest->n = field.n - colon - 2;
    if (letters == 0 || digest->n < MIN_DIGEST || digest->n > MAX_DIGEST)
        return REJECT;
    return OK;
}

/* The entry at pos (ima/entry.py: read_entry): OK, PARTIAL (the buffer ends inside it: stop before
 * it), or REJECT (malformed or a template handled only by the reference). */
static int
parse_entry(const unsigned char *buf, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t cs, Entry *e)
{
    if (n - pos < 8 + cs)
        return PARTIAL;
    e->pcr = le32(buf + pos);
    e->column = buf + pos + 4;
    uint32_t name_len = le32(buf + pos + 4 + cs);
    if (name_len == 0 || name_len > MAX_TEMPLATE_NAME)
        return REJECT;
    Py_ssize_t p = pos + 8 + cs;
    if (n - p < (Py_ssize_t)name_len + 4)
        return PARTIAL;
    Span name = {buf + p, name_len};
    p += name_len;
    int ng = name.n == 6 && memcmp(name.p, "ima-ng", 6) == 0;
    int sig = name.n == 7 && memcmp(name.p, "ima-sig", 7) == 0;
    int cgpath = name.n == 10 && memcmp(name.p, "ima-cgpath", 10) == 0;
    if (!ng && !sig && !cgpath)
        return REJECT; /* ima, ima-buf, unknown: the reference decides */
    uint32_t data_len = le32(buf + p);
    if (data_len > MAX_TEMPLATE_DATA)
        return REJECT;
    if (n - p - 4 < (Py_ssize_t)data_len)
        return PARTIAL;
    e->data.p = buf + p + 4;
    e->data.n = data_len;
    e->end = p + 4 + (Py_ssize_t)data_len;

    Span dep = {NULL, 0}, cg = dep, d = dep, name_field = dep, sig_field = dep;
    Py_ssize_t q = 0;
    if (cgpath && (take_field(e->data, &q, &dep) != OK || take_field(e->data, &q, &cg) != OK))
        return REJECT;
    if (take_field(e->data, &q, &d) != OK || take_field(e->data, &q, &name_field) != OK)
        return REJECT;
    if (sig && take_field(e->data, &q, &sig_field) != OK)
        return REJECT;
    if (q != e->data.n)
        return REJECT; /* trailing bytes */
    if (take_digest(d, &e->digest) != OK || take_string(name_field, MAX_PATH, &e->path) != OK)
        return REJECT;
    e->cgroup.p = NULL;
    e->cgroup.n = 0;
    if (cgpath) {
        Span dep_string;
        if (take_string(dep, MAX_FIELD, &dep_string) != OK ||
            take_string(cg, MAX_PATH, &e->cgroup) != OK)
            return REJECT;
    }
    return OK;
}

static int
all_zero(const unsigned char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* H(data) into out (b's algorithm). */
static int
digest_data(Bank *b, const Entry *e, unsigned char *out)
{
    unsigned int len;
    return EVP_DigestInit_ex2(b->ctx, b->md, NULL) &&
           EVP_DigestUpdate(b->ctx, e->data.p, (size_t)e->data.n) &&
           EVP_DigestFinal_ex(b->ctx, out, &len);
}

/* Extend one bank as the kernel does: H(pcr || H(data)), or H(pcr || FF..FF) for a violation.
 * hdata, when not NULL, receives H(data) (the template hash, when the column is this bank's). */
static int
extend(Bank *b, const Entry *e, int violation, unsigned char *hdata)
{
    unsigned char joined[2 * EVP_MAX_MD_SIZE];
    unsigned int len;
    memcpy(joined, b->pcr, b->size);
    if (violation)
        memset(joined + b->size, 0xFF, b->size);
    else if (!digest_data(b, e, joined + b->size))
        return 0;
    if (hdata != NULL)
        memcpy(hdata, joined + b->size, b->size);
    return EVP_DigestInit_ex2(b->ctx, b->md, NULL) &&
           EVP_DigestUpdate(b->ctx, joined, 2 * b->size) &&
           EVP_DigestFinal_ex(b->ctx, b->pcr, &len);
}

static int
at_quote(const Bank *b)
{
    return b->quoted_size == (Py_ssize_t)b->size && memcmp(b->pcr, b->quoted, b->size) == 0;
}

/* The template-hash column's algorithm (by its size) and the bank that already computes it (the
 * per-bank lists), if one does: then its H(data) is reused instead of hashing again. */
typedef struct {
    Bank bank;
    int reuse; /* index into banks, or -1 */
} Column;

/* Pass 1, without the GIL: parse and check every entry, replay until the primary bank (banks[0])
 * reaches its quoted value, checking each replayed entry's template-hash column. Returns the
 * number of entries covered, -1 for "ask the reference" (malformed, unsupported, no match, a
 * column that is not H(data), OpenSSL failure); *covered_end is where they end. */
static Py_ssize_t
replay(const unsigned char *buf, Py_ssize_t n, Py_ssize_t cs, Bank *banks, int nbanks,
       Column *col, Py_ssize_t *covered_end)
{
    Py_ssize_t covered = at_quote(&banks[0]) ? 0 : -1;
    Py_ssize_t pos = 0, k = 0;
    *covered_end = 0;
    while (pos < n) {
        Entry e;
        int r = parse_entry(buf, n, pos, cs, &e);
        if (r == PARTIAL)
            break;
        if (r == REJECT)
            return -1;
        k++;
        pos = e.end;
        if (covered >= 0)
            continue; /* past the quote: only checked, as the reference parses the whole read */
        int violation = all_zero(e.column, cs);
        /* not extended: the kernel's pcr= rule sent it to another PCR */
        int extended = violation || e.pcr == IMA_PCR;
        unsigned char hdata[EVP_MAX_MD_SIZE];
        for (int i = 0; extended && i < nbanks; i++)
            if (!extend(&banks[i], &e, violation, i == col->reuse ? hdata : NULL))
                return -1;
        if (!violation) { /* a violation's column is zeros */
            if (!(extended && col->reuse >= 0) && !digest_data(&col->bank, &e, hdata))
                return -1;
            if (memcmp(hdata, e.column, (size_t)cs) != 0)
                return -1;
        }
        if (extended && at_quote(&banks[0])) {
            covered = k;
            *covered_end = pos;
        }
    }
    if (covered < 0)
        return -1;
    for (int i = 1; i < nbanks; i++)
        if (!at_quote(&banks[i]))
            return -1;
    return covered;
}

/* Pass 2, with the GIL: the owners' tables and the hot policy check for the covered entries. */
typedef struct {
    PyObject *table_for; /* cgroup bytes or None -> path table or None (owner not judged) */
    PyObject *index;     /* cgroup -> position in keys/tables */
    PyObject *keys, *tables;
    Py_ssize_t *counts;
    Py_ssize_t size, capacity;
} Owners;

/* The position of e's owner, calling table_for on the first entry of each cgroup; -1 on error. */
static Py_ssize_t
owner_of(Owners *o, const Entry *e)
{
    PyObject *key = e->cgroup.p ? PyBytes_FromStringAndSize((const char *)e->cgroup.p, e->cgroup.n)
                                : Py_NewRef(Py_None);
    if (key == NULL)
        return -1;
    PyObject *known = PyDict_GetItemWithError(o->index, key);
    if (known != NULL) {
        Py_DECREF(key);
        return PyLong_AsSsize_t(known);
    }
    Py_ssize_t at = -1;
    PyObject *table = NULL, *position = NULL;
    if (PyErr_Occurred())
        goto done;
    table = PyObject_CallOneArg(o->table_for, key);
    if (table == NULL)
        goto done;
    if (o->size == o->capacity) { /* doubling: a log may hold one cgroup per entry */
        Py_ssize_t capacity = o->capacity ? 2 * o->capacity : 16;
        Py_ssize_t *counts = NULL;
        if ((size_t)capacity <= PY_SSIZE_T_MAX / sizeof(Py_ssize_t))
            counts = PyMem_Realloc(o->counts, (size_t)capacity * sizeof(Py_ssize_t));
        if (counts == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        o->counts = counts;
        o->capacity = capacity;
    }
    position = PyLong_FromSsize_t(o->size);
    if (position == NULL || PyDict_SetItem(o->index, key, position) < 0 ||
        PyList_Append(o->keys, key) < 0 || PyList_Append(o->tables, table) < 0)
        goto done;
    o->counts[o->size] = 0;
    at = o->size++;
done:
    Py_XDECREF(position);
    Py_XDECREF(table);
    Py_DECREF(key);
    return at;
}

/* Is (path, digest) allowed by table? 1 yes, 0 no (a suspect), -1 error. */
static int
allowed(PyObject *table, const Entry *e)
{
    PyObject *path = PyBytes_FromStringAndSize((const char *)e->path.p, e->path.n);
    if (path == NULL)
        return -1;
    PyObject *digests = PyObject_GetItem(table, path);
    Py_DECREF(path);
    if (digests == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError))
            return -1;
        PyErr_Clear();
        return 0;
    }
    PyObject *digest = PyBytes_FromStringAndSize((const char *)e->digest.p, e->digest.n);
    int found = digest ? PySequence_Contains(digests, digest) : -1;
    Py_XDECREF(digest);
    Py_DECREF(digests);
    return found;
}

/* Judge entries 0..covered-1: returns [(k, start, end) of each suspect], fills o; NULL on error. */
static PyObject *
judge(const unsigned char *buf, Py_ssize_t n, Py_ssize_t cs, Py_ssize_t covered, Owners *o)
{
    PyObject *suspects = PyList_New(0);
    if (suspects == NULL)
        return NULL;
    Span last = {NULL, -1}; /* the previous entry's cgroup: runs of one cgroup skip the dict */
    Py_ssize_t owner = -1, pos = 0;
    for (Py_ssize_t k = 0; k < covered; k++) {
        Entry e;
        if (parse_entry(buf, n, pos, cs, &e) != OK) { /* accepted by pass 1: cannot happen */
            PyErr_SetString(PyExc_AssertionError, "_imafast: covered entry no longer parses");
            goto error;
        }
        int same = last.n == (e.cgroup.p ? e.cgroup.n : -2) &&
                   (e.cgroup.p == NULL || memcmp(last.p, e.cgroup.p, e.cgroup.n) == 0);
        if (!same) {
            owner = owner_of(o, &e);
            if (owner < 0)
                goto error;
            last.p = e.cgroup.p;
            last.n = e.cgroup.p ? e.cgroup.n : -2;
        }
        o->counts[owner]++;
        PyObject *table = PyList_GET_ITEM(o->tables, owner);
        if (table != Py_None) {
            int ok = allowed(table, &e);
            if (ok < 0)
                goto error;
            if (!ok) {
                PyObject *item = Py_BuildValue("(nnn)", k, pos, e.end);
                if (item == NULL || PyList_Append(suspects, item) < 0) {
                    Py_XDECREF(item);
                    goto error;
                }
                Py_DECREF(item);
            }
        }
        pos = e.end;
    }
    return suspects;
error:
    Py_DECREF(suspects);
    return NULL;
}

static PyObject *
counts_dict(const Owners *o)
{
    PyObject *out = PyDict_New();
    for (Py_ssize_t i = 0; out != NULL && i < o->size; i++) {
        PyObject *count = PyLong_FromSsize_t(o->counts[i]);
        if (count == NULL || PyDict_SetItem(out, PyList_GET_ITEM(o->keys, i), count) < 0)
            Py_CLEAR(out);
        Py_XDECREF(count);
    }
    return out;
}

/* Fetch each bank's digest and copy its running and quoted values. 1: ready; 0: ask the
 * reference (unknown digest, a running value of the wrong size); -1: error set. */
static int
setup_banks(PyObject *spec, Bank *banks, int *nbanks)
{
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) < 1 || PyTuple_GET_SIZE(spec) > MAX_BANKS) {
        PyErr_SetString(PyExc_TypeError, "banks: a tuple of 1 to 4 (name, running, quoted)");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(spec); i++) {
        const char *name;
        const char *start, *quoted;
        Py_ssize_t start_size, quoted_size;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(spec, i), "sy#y#", &name, &start, &start_size,
                              &quoted, &quoted_size))
            return -1;
        Bank *b = &banks[(*nbanks)++];
        b->md = EVP_MD_fetch(NULL, name, NULL);
        b->ctx = EVP_MD_CTX_new();
        int size = b->md ? EVP_MD_get_size(b->md) : 0;
        if (b->ctx == NULL || size <= 0 || start_size != size)
            return 0;
        b->size = (size_t)size;
        memcpy(b->pcr, start, b->size);
        b->quoted_size = quoted_size <= EVP_MAX_MD_SIZE ? quoted_size : -1;
        if (b->quoted_size > 0)
            memcpy(b->quoted, quoted, (size_t)quoted_size);
    }
    return 1;
}

/* The column's digest for its size, and the bank that computes the same one; 0 if unavailable. */
static int
setup_column(Py_ssize_t cs, const Bank *banks, int nbanks, Column *col)
{
    const char *name = cs == 20 ? "SHA1" : cs == 32 ? "SHA256" : cs == 48 ? "SHA384" : "SHA512";
    col->reuse = -1;
    col->bank.md = EVP_MD_fetch(NULL, name, NULL);
    col->bank.ctx = EVP_MD_CTX_new();
    if (col->bank.md == NULL || col->bank.ctx == NULL)
        return 0;
    col->bank.size = (size_t)cs;
    for (int i = 0; i < nbanks; i++)
        if (EVP_MD_is_a(banks[i].md, name) && banks[i].size == (size_t)cs) {
            col->reuse = i;
            break;
        }
    return 1;
}

static void
free_banks(Bank *banks, int nbanks)
{
    for (int i = 0; i < nbanks; i++) {
        EVP_MD_CTX_free(banks[i].ctx);
        EVP_MD_free(banks[i].md);
    }
}

PyDoc_STRVAR(scan_doc,
"scan(log, column_size, banks, table_for)\n--\n\n"
"Replay and judge the binary IMA entries of ``log`` (from its start). ``banks``: (digest name,\n"
"running PCR 10, quoted PCR 10) per quoted bank, the one that locates the covered prefix first.\n"
"``table_for(cgroup)`` gives an owner's path -> digests table, or None not to judge it.\n"
"Returns (covered, covered_end, first_end, suspects, counts) or None: ask the reference.");

static PyObject *
scan(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *log, *spec, *table_for;
    Py_ssize_t cs;
    if (!PyArg_ParseTuple(args, "O!nO!O:scan", &PyBytes_Type, &log, &cs, &PyTuple_Type, &spec,
                          &table_for))
        return NULL;
    if (cs != 20 && cs != 32 && cs != 48 && cs != 64) {
        PyErr_Format(PyExc_ValueError, "column size %zd is not a digest size", cs);
        return NULL;
    }
    if (!PyCallable_Check(table_for)) {
        PyErr_SetString(PyExc_TypeError, "table_for must be callable");
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(log);
    Py_ssize_t n = PyBytes_GET_SIZE(log);
    Bank banks[MAX_BANKS];
    Column col;
    int nbanks = 0, ready;
    memset(banks, 0, sizeof banks);
    memset(&col, 0, sizeof col);
    Owners o = {table_for, PyDict_New(), PyList_New(0), PyList_New(0), NULL, 0, 0};
    PyObject *suspects = NULL, *counts = NULL, *result = NULL;
    Py_ssize_t covered, covered_end, first_end = 0;
    if (o.index == NULL || o.keys == NULL || o.tables == NULL)
        goto done;
    ready = setup_banks(spec, banks, &nbanks);
    if (ready > 0)
        ready = setup_column(cs, banks, nbanks, &col);
    if (ready <= 0) {
        result = ready == 0 ? Py_NewRef(Py_None) : NULL;
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    covered = replay(buf, n, cs, banks, nbanks, &col, &covered_end);
    Py_END_ALLOW_THREADS
    if (covered < 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (covered > 0) {
        Entry first;
        (void)parse_entry(buf, n, 0, cs, &first);
        first_end = first.end;
    }
    suspects = judge(buf, n, cs, covered, &o);
    counts = suspects ? counts_dict(&o) : NULL;
    if (counts != NULL)
        result = Py_BuildValue("(nnnOO)", covered, covered_end, first_end, suspects, counts);
done:
    free_banks(banks, nbanks);
    free_banks(&col.bank, 1);
    PyMem_Free(o.counts);
    Py_XDECREF(o.index);
    Py_XDECREF(o.keys);
    Py_XDECREF(o.tables);
    Py_XDECREF(suspects);
    Py_XDECREF(counts);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS, scan_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "attestation._imafast",
    .m_doc = "The IMA replay and policy hot loop in C (optional; attestation.logcheck is the "
             "reference).",
    .m_size = 0,
    .m_methods = methods,
};

/* What logcheck_native expects: an extension built from an older _imafast.c (a stale build in
 * a working tree) is not used. 2: names are bytes; template-hash columns are checked. */
#define IMAFAST_API 2

PyMODINIT_FUNC
PyInit__imafast(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "API", IMAFAST_API) < 0)
        Py_CLEAR(m);
    return m;
}
