/* tokenizer.c: tokenizer.json (BPE) encode and decode as Hugging Face `tokenizers` does, with PCRE2 for its regexes. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"
#include "unicode_nfc.h"

#include <cJSON.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Ids above this are refused: a real vocabulary is a few hundred thousand, and a file must not make
 * us allocate gigabytes for a table indexed by id. */
#define MAX_ID (1 << 24)
/* A word longer than this (bytes) cannot be indexed by the int32 positions of the merge heap. */
#define MAX_WORD (INT32_MAX / 2)
/* PCRE2 limits: a hostile pattern must fail with a message, not spin or eat memory. */
#define RE_MATCH_LIMIT 20000000u
#define RE_HEAP_LIMIT_KIB (256u * 1024u)

/* ---------------------------------------------------------------- small containers */

typedef struct {
    char *p;
    size_t n, cap; /* p[n] is always NUL once p exists */
} sbuf;

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2) return false;
        c *= 2;
    }
    if (c > SIZE_MAX / elem) return false;
    void *q = realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static bool sb_add(sbuf *b, const void *s, size_t n) {
    if (n > SIZE_MAX - b->n - 1) return false;
    if (!grow((void **)&b->p, &b->cap, b->n + n + 1, 1)) return false;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return true;
}

static void sb_swap(sbuf *a, sbuf *b) {
    sbuf t = *a;
    *a = *b;
    *b = t;
}

typedef struct {
    int *v;
    size_t n, cap;
} ivec;

static bool iv_push(ivec *a, int x) {
    if (!grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v)) return false;
    a->v[a->n++] = x;
    return true;
}

/* A byte range [s, e) and, where it matters, the added-token id it stands for (-1: plain text). */
typedef struct {
    size_t s, e;
    int id;
} span;

typedef struct {
    span *v;
    size_t n, cap;
} spanvec;

static bool sv_push(spanvec *a, size_t s, size_t e, int id) {
    if (!grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v)) return false;
    a->v[a->n++] = (span){s, e, id};
    return true;
}

static uint64_t fnv1a(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

/* String -> int map, open addressing; keys copied into the map's own arena. */
typedef struct {
    size_t off;
    uint32_t len; /* UINT32_MAX: empty slot */
    int32_t val;
} sm_slot;

typedef struct {
    sm_slot *slot;
    size_t cap, n;
    sbuf keys;
} strmap;

static bool sm_rehash(strmap *m, size_t cap) {
    sm_slot *ns = malloc(cap * sizeof *ns);
    if (!ns) return false;
    for (size_t i = 0; i < cap; i++) ns[i].len = UINT32_MAX;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slot[i].len == UINT32_MAX) continue;
        size_t j = fnv1a(m->keys.p + m->slot[i].off, m->slot[i].len) & (cap - 1);
        while (ns[j].len != UINT32_MAX) j = (j + 1) & (cap - 1);
        ns[j] = m->slot[i];
    }
    free(m->slot);
    m->slot = ns;
    m->cap = cap;
    return true;
}

static int sm_get(const strmap *m, const char *k, size_t len) {
    if (!m->cap) return -1;
    size_t j = fnv1a(k, len) & (m->cap - 1);
    while (m->slot[j].len != UINT32_MAX) {
        if (m->slot[j].len == len && memcmp(m->keys.p + m->slot[j].off, k, len) == 0) return m->slot[j].val;
        j = (j + 1) & (m->cap - 1);
    }
    return -1;
}

/* Inserts or overwrites (a later duplicate key wins, as when serde fills a HashMap). */
static bool sm_put(strmap *m, const char *k, size_t len, int val) {
    if (len >= UINT32_MAX) return false;
    if ((m->n + 1) * 2 > m->cap && !sm_rehash(m, m->cap ? m->cap * 2 : 64)) return false;
    size_t j = fnv1a(k, len) & (m->cap - 1);
    while (m->slot[j].len != UINT32_MAX) {
        if (m->slot[j].len == len && memcmp(m->keys.p + m->slot[j].off, k, len) == 0) {
            m->slot[j].val = val;
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    size_t off = m->keys.n;
    if (!sb_add(&m->keys, k, len)) return false;
    m->slot[j] = (sm_slot){off, (uint32_t)len, val};
    m->n++;
    return true;
}

static void sm_free(strmap *m) {
    free(m->slot);
    free(m->keys.p);
}

/* (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t key; /* UINT64_MAX: empty */
    int32_t rank, id;
} pm_slot;

typedef struct {
    pm_slot *slot;
    size_t cap, n;
} pairmap;

static size_t pm_hash(uint64_t k, size_t cap) { return (size_t)((k * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1); }

static bool pm_put(pairmap *m, uint64_t key, int32_t rank, int32_t id) {
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        pm_slot *ns = malloc(cap * sizeof *ns);
        if (!ns) return false;
        for (size_t i = 0; i < cap; i++) ns[i].key = UINT64_MAX;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->slot[i].key == UINT64_MAX) continue;
            size_t j = pm_hash(m->slot[i].key, cap);
            while (ns[j].key != UINT64_MAX) j = (j + 1) & (cap - 1);
            ns[j] = m->slot[i];
        }
        free(m->slot);
        m->slot = ns;
        m->cap = cap;
    }
    size_t j = pm_hash(key, m->cap);
    while (m->slot[j].key != UINT64_MAX && m->slot[j].key != key) j = (j + 1) & (m->cap - 1);
    if (m->slot[j].key == UINT64_MAX) m->n++;
    m->slot[j] = (pm_slot){key, rank, id};
    return true;
}

static const pm_slot *pm_get(const pairmap *m, int a, int b) {
    if (!m->cap) return NULL;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t j = pm_hash(key, m->cap);
    while (m->slot[j].key != UINT64_MAX) {
        if (m->slot[j].key == key) return &m->slot[j];
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

/* ---------------------------------------------------------------- UTF-8 and Unicode classes */

/* Length of the (valid) UTF-8 character starting with byte c. */
static size_t u8len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* Decodes one character of valid UTF-8 at s (n bytes left, n >= 1); *adv gets its length. */
static uint32_t u8dec(const char *str, size_t n, size_t *adv) {
    const unsigned char *s = (const unsigned char *)str;
    size_t l = u8len(s[0]);
    if (l > n) l = n; /* never read past the end, even on a broken invariant */
    *adv = l;
    if (l == 1) return s[0];
    uint32_t cp = s[0] & (0x7F >> l);
    for (size_t i = 1; i < l; i++) cp = cp << 6 | (s[i] & 0x3F);
    return cp;
}

static size_t u8enc(uint32_t cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | (cp >> 6 & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Appends s to out with every ill-formed sequence replaced by U+FFFD, one per maximal subpart (the
 * Unicode recommendation that Rust's from_utf8_lossy and Python's errors="replace" follow). */
static bool u8_lossy(const char *str, size_t n, sbuf *out) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0; /* run: start of the pending valid stretch */
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) need = 2;
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else need = 0;
        size_t k = 0;
        if (need) {
            while (k < need && i + 1 + k < n) {
                unsigned d = s[i + 1 + k];
                if (k == 0 ? (d < lo || d > hi) : (d & 0xC0) != 0x80) break;
                k++;
            }
        }
        if (need && k == need) { i += need + 1; continue; }
        if (!sb_add(out, s + run, i - run) || !sb_add(out, "\xEF\xBF\xBD", 3)) return false;
        i += 1 + k;
        run = i;
    }
    return sb_add(out, s + run, n - run);
}

/* Unicode White_Space (Rust's char::is_whitespace, which HF's Strip and lstrip/rstrip use). */
static bool is_ws(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Index of the range holding c in a sorted table of {first, last, ...} rows, or -1. */
static long range_find(const uint32_t *rows, size_t n_rows, size_t stride, uint32_t c) {
    size_t lo = 0, hi = n_rows;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < rows[mid * stride]) hi = mid;
        else if (c > rows[mid * stride + 1]) lo = mid + 1;
        else return (long)mid;
    }
    return -1;
}

/* UAX #15's NFC quick check: true when NFC certainly leaves s unchanged (every character NFC_QC=Yes
 * and combining marks in canonical order). spotq carries no composition tables, so the NFC normalizer
 * (Qwen2's) accepts such text as it is and refuses the rest rather than guess. *bad gets the culprit. */
static bool nfc_quick_yes(const char *s, size_t n, uint32_t *bad) {
    unsigned last_ccc = 0;
    for (size_t p = 0, adv; p < n; p += adv) {
        uint32_t c = u8dec(s + p, n - p, &adv);
        if (c < 0x300) { last_ccc = 0; continue; }
        long k = range_find(&nfc_ccc_runs[0][0], sizeof nfc_ccc_runs / sizeof nfc_ccc_runs[0], 3, c);
        unsigned ccc = k < 0 ? 0 : nfc_ccc_runs[k][2];
        if ((ccc && last_ccc > ccc) ||
            range_find(&nfc_qc_not_yes[0][0], sizeof nfc_qc_not_yes / sizeof nfc_qc_not_yes[0], 2, c) >= 0) {
            *bad = c;
            return false;
        }
        last_ccc = ccc;
    }
    return true;
}

/* ---------------------------------------------------------------- the tokenizer */

/* A pattern: a literal string (matched with memmem) or a compiled regex. */
typedef struct {
    pcre2_code *re; /* NULL for a non-empty literal */
    char *lit;
    size_t lit_len;
} pattern;

enum { NORM_REPLACE, NORM_PREPEND, NORM_STRIP, NORM_NFC };
typedef struct {
    int kind;
    pattern pat; /* NORM_REPLACE */
    char *str;   /* replacement content or prepended text */
    size_t len;
    bool left, right; /* NORM_STRIP */
} norm_op;

enum { PRE_METASPACE, PRE_BYTELEVEL, PRE_SPLIT };
enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };
typedef struct {
    int kind;
    pattern pat;      /* PRE_SPLIT */
    int behavior;     /* PRE_SPLIT */
    bool invert;      /* PRE_SPLIT */
    char *str;        /* PRE_METASPACE replacement */
    size_t len;
    int scheme;       /* PRE_METASPACE */
    bool split;       /* PRE_METASPACE */
    bool prefix;      /* PRE_BYTELEVEL add_prefix_space */
    bool use_regex;   /* PRE_BYTELEVEL */
} pre_op;

enum { DEC_REPLACE, DEC_BYTEFALLBACK, DEC_FUSE, DEC_STRIP, DEC_METASPACE, DEC_BYTELEVEL };
typedef struct {
    int kind;
    pattern pat; /* DEC_REPLACE */
    char *str;   /* DEC_REPLACE content, DEC_METASPACE replacement */
    size_t len;
    uint32_t cp;       /* DEC_STRIP content */
    size_t start, stop; /* DEC_STRIP */
    bool prefix;       /* DEC_METASPACE: drop the replacement in the first token */
} dec_op;

typedef struct {
    char *content;
    size_t len;
    char *match; /* what is searched for: content, or content normalised when `normalized` */
    size_t match_len;
    int id;
    bool special, lstrip, rstrip, normalized, single_word;
} added_tok;

/* Added tokens searched in one pass, bucketed by first byte and longest first, so the first hit at a
 * position is the leftmost-longest match. */
typedef struct {
    int *idx; /* into sq_tok.added */
    size_t n;
    size_t first[257]; /* idx[first[b] .. first[b+1]) start with byte b */
} match_set;

enum { F_PIECE = 1, F_SPECIAL = 2 }; /* an id with a string; a special added token */

struct sq_tok {
    char *path; /* for messages */
    int n_ids;  /* largest id + 1 */
    size_t *piece_off; /* (n_ids) offset of each token's string in pieces */
    uint8_t *flags;    /* (n_ids) F_* */
    sbuf pieces;
    strmap vocab;  /* model vocabulary */
    strmap added_map; /* added token content -> id */
    pairmap merges;
    int byte_id[256]; /* id of <0xXX>, -1 when absent */
    int unk_id;
    bool fuse_unk, byte_fallback, ignore_merges;
    char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix (NULL: none) */
    size_t prefix_len, suffix_len;
    added_tok *added;
    size_t n_added;
    match_set raw_set, norm_set;
    norm_op *norm;
    size_t n_norm;
    pre_op *pre;
    size_t n_pre;
    dec_op *dec;
    size_t n_dec;
    bool has_decoder;
    int bos;
    char bos_rule[160]; /* which rule gave bos, for the user */
    pcre2_code *gpt2_re; /* ByteLevel's split regex, compiled when a ByteLevel uses it */
    pcre2_code *word_re; /* a word character, for single_word added tokens */
    pcre2_match_context *mctx;
    char b2u[256][2]; /* GPT-2 bytes -> unicode map, UTF-8 of each (all below U+0144: two bytes at most) */
    uint8_t b2u_len[256];
    int16_t u2b[0x144]; /* its inverse, -1 where none */
};

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---------------------------------------------------------------- patterns */

/* Character classes as Oniguruma (HF's regex engine) has them, in PCRE2 syntax without the brackets.
 * Its \w is Alphabetic, marks, decimal digits and connectors plus ²³¹¼½¾ (from its Latin-1 table),
 * where PCRE2 10.42's is letters, numbers and _ (and \b follows \w); its \s is White_Space, which PCRE2
 * widens with U+180E. With these, the two engines agree on every code point of Unicode 14. */
#define ONIG_W "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}"
#define ONIG_S "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
/* Rust's regex crate (HF's Whitespace pre-tokenizer and single_word test): \w with joiners, no ²³¹¼½¾. */
#define RUST_W "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}"

/* Rewrites an Oniguruma pattern for PCRE2 where the two read the same text differently: \w \W \s \S
 * \b \B (the classes above), \h \H (hex digits in Oniguruma, horizontal space in PCRE2) and \uHHHH. A negated
 * class cannot go inside [...] in PCRE2 10.42, so \W \S \H there keep PCRE2's meaning. */
static bool onig_to_pcre(const char *src, sbuf *out) {
    bool in_class = false, ok = sb_add(out, "", 0);
    size_t n = strlen(src);
    for (size_t i = 0; ok && i < n;) {
        char ch = src[i];
        if (ch == '\\' && i + 1 < n) {
            char e = src[i + 1];
            const char *rep = NULL;
            if (e == 'w') rep = in_class ? ONIG_W : "[" ONIG_W "]";
            else if (e == 's') rep = in_class ? ONIG_S : "[" ONIG_S "]";
            else if (e == 'h') rep = in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
            else if (!in_class && e == 'W') rep = "[^" ONIG_W "]";
            else if (!in_class && e == 'S') rep = "[^" ONIG_S "]";
            else if (!in_class && e == 'H') rep = "[^0-9a-fA-F]";
            else if (!in_class && e == 'b') rep = "(?:(?<=[" ONIG_W "])(?![" ONIG_W "])|(?<![" ONIG_W "])(?=[" ONIG_W "]))";
            else if (!in_class && e == 'B') rep = "(?:(?<=[" ONIG_W "])(?=[" ONIG_W "])|(?<![" ONIG_W "])(?![" ONIG_W "]))";
            if (rep) {
                ok = sb_add(out, rep, strlen(rep));
                i += 2;
                continue;
            }
            if (e == 'u' && i + 6 <= n && strspn(src + i + 2, "0123456789abcdefABCDEF") >= 4) {
                ok = sb_add(out, "\\x{", 3) && sb_add(out, src + i + 2, 4) && sb_add(out, "}", 1);
                i += 6;
                continue;
            }
            ok = sb_add(out, src + i, 2);
            i += 2;
            continue;
        }
        if (!in_class && ch == '[') {
            in_class = true;
            size_t k = i + 1;
            if (k < n && src[k] == '^') k++;
            if (k < n && src[k] == ']') k++; /* a ] first in a class is literal */
            ok = sb_add(out, src + i, k - i);
            i = k;
            continue;
        }
        if (in_class && ch == '[' && i + 1 < n && src[i + 1] == ':') { /* [:alpha:] */
            const char *e = strstr(src + i + 2, ":]");
            size_t k = e ? (size_t)(e - src) + 2 : i + 1;
            ok = sb_add(out, src + i, k - i);
            i = k;
            continue;
        }
        if (in_class && ch == ']') in_class = false;
        ok = sb_add(out, &src[i], 1);
        i++;
    }
    return ok;
}

static sq_status pat_compile(const sq_tok *t, pattern *p, const char *src, bool literal, const char *what, sq_err *err) {
    size_t len = strlen(src);
    if (literal && len) {
        /* Oniguruma on an escaped string finds the same leftmost non-overlapping occurrences */
        p->lit = malloc(len + 1);
        if (!p->lit) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
        memcpy(p->lit, src, len + 1);
        p->lit_len = len;
        return SQ_OK;
    }
    int ec;
    PCRE2_SIZE eo;
    sbuf pat = {0};
    if (!literal) {
        if (!onig_to_pcre(src, &pat)) {
            free(pat.p);
            return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
        }
        src = pat.p;
        len = pat.n;
    }
    /* MULTILINE: HF's Oniguruma uses Ruby syntax, where ^ and $ match at every line */
    uint32_t opts = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE;
    p->re = pcre2_compile((PCRE2_SPTR)src, len, opts, &ec, &eo, NULL);
    free(pat.p);
    if (!p->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: bad regex: %s", t->path, what, (char *)msg);
    }
    pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* when JIT is unavailable the interpreter runs it */
    return SQ_OK;
}

static void pat_free(pattern *p) {
    pcre2_code_free(p->re);
    free(p->lit);
}

/* All matches of re in s, iterated as Oniguruma's find_iter does: an empty match right where the
 * previous match ended is skipped by one character. */
static sq_status re_find_all(const sq_tok *t, const pcre2_code *re, const char *s, size_t n, spanvec *out, sq_err *err) {
    out->n = 0;
    /* every string here is valid UTF-8 by construction; checking once lets each match skip the check
     * (PCRE2 would otherwise rescan the rest of the subject on every call: quadratic) */
    if (!sq_utf8_valid(s, n)) return sq_fail(err, SQ_ERR_INTERNAL, "%s: invalid UTF-8 reached the regex engine", t->path);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
    sq_status st = SQ_OK;
    uint32_t opts = PCRE2_NO_UTF_CHECK;
    size_t pos = 0, last_end = SIZE_MAX;
    while (pos <= n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, opts, md, t->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !(opts & PCRE2_NO_JIT)) { opts |= PCRE2_NO_JIT; continue; }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = sq_fail(err, SQ_ERR_FORMAT, "%s: regex match failed: %s", t->path, (char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms < pos || me < ms || me > n) { /* \K tricks; refuse rather than trust */
            st = sq_fail(err, SQ_ERR_FORMAT, "%s: regex gave a match outside the text (\\K?)", t->path);
            break;
        }
        if (ms == me && ms == last_end) {
            if (ms >= n) break;
            pos = ms + u8len((unsigned char)s[ms]);
            continue;
        }
        if (!sv_push(out, ms, me, -1)) { st = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path); break; }
        last_end = me;
        pos = me;
    }
    pcre2_match_data_free(md);
    return st;
}

static sq_status pat_find_all(const sq_tok *t, const pattern *p, const char *s, size_t n, spanvec *out, sq_err *err) {
    if (p->re) return re_find_all(t, p->re, s, n, out, err);
    out->n = 0;
    size_t pos = 0;
    while (pos + p->lit_len <= n) {
        const char *h = memmem(s + pos, n - pos, p->lit, p->lit_len);
        if (!h) break;
        size_t ms = (size_t)(h - s);
        if (!sv_push(out, ms, ms + p->lit_len, -1)) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
        pos = ms + p->lit_len;
    }
    return SQ_OK;
}

/* Replaces every match of p in s with rep, into out (reset first). */
static sq_status pat_replace(const sq_tok *t, const pattern *p, const char *s, size_t n, const char *rep, size_t rep_len,
                             sbuf *out, spanvec *m, sq_err *err) {
    sq_status st = pat_find_all(t, p, s, n, m, err);
    if (st) return st;
    out->n = 0;
    size_t prev = 0;
    bool ok = sb_add(out, "", 0);
    for (size_t i = 0; ok && i < m->n; i++) {
        ok = sb_add(out, s + prev, m->v[i].s - prev) && sb_add(out, rep, rep_len);
        prev = m->v[i].e;
    }
    if (!ok || !sb_add(out, s + prev, n - prev)) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
    return SQ_OK;
}

/* HF's NormalizedString::split: the matches and the gaps between them cover the text; `invert` swaps
 * their roles, then `behavior` says what becomes of the matches. Keeps the non-empty pieces in out. */
static bool split_by(const spanvec *m, size_t n, int behavior, bool invert, spanvec *out, spanvec *tmp) {
    out->n = 0;
    tmp->n = 0;
    size_t prev = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (prev != m->v[i].s && !sv_push(tmp, prev, m->v[i].s, invert)) return false;
        if (!sv_push(tmp, m->v[i].s, m->v[i].e, !invert)) return false;
        prev = m->v[i].e;
    }
    if (prev != n && !sv_push(tmp, prev, n, invert)) return false;
    /* span.id holds is_match here */
    bool pm = false;
    if (behavior == B_MERGED_NEXT) {
        for (size_t k = tmp->n; k-- > 0;) {
            span x = tmp->v[k];
            if (x.id && !pm && out->n) out->v[out->n - 1].s = x.s;
            else if (!sv_push(out, x.s, x.e, 0)) return false;
            pm = x.id;
        }
        for (size_t a = 0, b = out->n ? out->n - 1 : 0; a < b; a++, b--) {
            span x = out->v[a];
            out->v[a] = out->v[b];
            out->v[b] = x;
        }
    } else {
        for (size_t k = 0; k < tmp->n; k++) {
            span x = tmp->v[k];
            bool merge = false;
            if (behavior == B_REMOVED && x.id) continue;
            if (behavior == B_MERGED_PREV) merge = x.id && !pm && out->n;
            if (behavior == B_CONTIGUOUS) merge = x.id == pm && out->n;
            if (behavior == B_CONTIGUOUS || behavior == B_MERGED_PREV) pm = x.id;
            if (merge) out->v[out->n - 1].e = x.e;
            else if (!sv_push(out, x.s, x.e, 0)) return false;
        }
    }
    size_t w = 0;
    for (size_t k = 0; k < out->n; k++)
        if (out->v[k].e > out->v[k].s) out->v[w++] = out->v[k];
    out->n = w;
    return true;
}

/* ---------------------------------------------------------------- encoding */

/* Scratch space of one encode call (the tokenizer itself stays read-only, so threads may share it). */
typedef struct {
    const sq_tok *t;
    sq_err *err;
    spanvec m, seg, tmp;
    sbuf a, b;
    struct sym {
        int id, prev, next;
        size_t len;
    } *sym;
    size_t sym_cap;
    struct cand {
        int32_t rank, pos, id;
    } *heap;
    size_t heap_cap;
    sbuf key;
} enc;

#define NOMEM(c) sq_fail((c)->err, SQ_ERR_NOMEM, "%s: out of memory", (c)->t->path)

static bool is_word_at(const sq_tok *t, const char *s, size_t n, size_t at) {
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return false;
    int rc = pcre2_match(t->word_re, (PCRE2_SPTR)s, n, at, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md, t->mctx);
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* HF's AddedVocabulary::find_matches: leftmost-longest matches of the set in s, filtered (specials when
 * not parsing them, single_word), widened by lstrip/rstrip; out gets text spans (id -1) and token spans. */
static sq_status find_added(enc *c, const match_set *ms, const char *s, size_t n, bool parse_special, spanvec *out) {
    const sq_tok *t = c->t;
    out->n = 0;
    size_t start_off = 0, pos = 0;
    while (ms->n && pos < n) {
        unsigned char b = (unsigned char)s[pos];
        const added_tok *hit = NULL;
        for (size_t k = ms->first[b]; k < ms->first[b + 1]; k++) {
            const added_tok *a = &t->added[ms->idx[k]];
            if (a->match_len <= n - pos && memcmp(s + pos, a->match, a->match_len) == 0) { hit = a; break; }
        }
        if (!hit) { pos++; continue; }
        size_t start = pos, stop = pos + hit->match_len;
        pos = stop;
        if (hit->special && !parse_special) continue;
        if (hit->single_word) {
            bool word_before = false, word_after = false;
            if (start > 0) {
                size_t p = start - 1;
                while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
                word_before = is_word_at(t, s, start, p);
            }
            if (stop < n) word_after = is_word_at(t, s, n, stop);
            if (word_before || word_after) continue;
        }
        if (hit->lstrip) {
            size_t p = start;
            while (p > 0) {
                size_t q = p - 1, adv;
                while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
                if (!is_ws(u8dec(s + q, n - q, &adv))) break;
                p = q;
            }
            start = p > start_off ? p : start_off; /* whitespace already taken by an earlier token stays there */
        }
        if (hit->rstrip) {
            size_t adv;
            while (stop < n && is_ws(u8dec(s + stop, n - stop, &adv))) stop += adv;
            if (pos < stop) pos = stop;
        }
        if (start_off < start && !sv_push(out, start_off, start, -1)) return NOMEM(c);
        if (!sv_push(out, start, stop, hit->id)) return NOMEM(c);
        start_off = stop;
    }
    if (start_off < n && !sv_push(out, start_off, n, -1)) return NOMEM(c);
    return SQ_OK;
}

/* Runs the normalizers over s into c->a. */
static sq_status normalize(enc *c, const char *s, size_t n) {
    const sq_tok *t = c->t;
    c->a.n = 0;
    if (!sb_add(&c->a, s, n)) return NOMEM(c);
    for (size_t i = 0; i < t->n_norm; i++) {
        const norm_op *op = &t->norm[i];
        sq_status st;
        switch (op->kind) {
        case NORM_REPLACE:
            st = pat_replace(t, &op->pat, c->a.p, c->a.n, op->str, op->len, &c->b, &c->m, c->err);
            if (st) return st;
            sb_swap(&c->a, &c->b);
            break;
        case NORM_PREPEND:
            if (!c->a.n) break;
            c->b.n = 0;
            if (!sb_add(&c->b, op->str, op->len) || !sb_add(&c->b, c->a.p, c->a.n)) return NOMEM(c);
            sb_swap(&c->a, &c->b);
            break;
        case NORM_STRIP: {
            size_t lo = 0, hi = c->a.n, adv;
            while (op->left && lo < hi && is_ws(u8dec(c->a.p + lo, hi - lo, &adv))) lo += adv;
            while (op->right && hi > lo) {
                size_t q = hi - 1;
                while (q > lo && ((unsigned char)c->a.p[q] & 0xC0) == 0x80) q--;
                if (!is_ws(u8dec(c->a.p + q, hi - q, &adv))) break;
                hi = q;
            }
            memmove(c->a.p, c->a.p + lo, hi - lo);
            c->a.n = hi - lo;
            c->a.p[c->a.n] = 0;
            break;
        }
        case NORM_NFC: {
            uint32_t bad;
            if (!nfc_quick_yes(c->a.p, c->a.n, &bad))
                return sq_fail(c->err, SQ_ERR_UNSUPPORTED,
                               "%s: NFC normalizer: the text holds U+%04X, which NFC may change; spotq only "
                               "handles text that NFC leaves as it is", t->path, (unsigned)bad);
            break;
        }
        }
    }
    return SQ_OK;
}

/* Pre-tokenized pieces: byte ranges of buf, and whether each starts the original text (HF's
 * offsets_original().0 == 0, which Metaspace's prepend_scheme "first" looks at). */
typedef struct {
    sbuf buf;
    struct piece {
        size_t off, len;
        bool first;
    } *v;
    size_t n, cap;
} plist;

static bool pl_push(plist *l, const char *s, size_t n, bool first) {
    if (!grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v)) return false;
    size_t off = l->buf.n;
    if (!sb_add(&l->buf, s, n)) return false;
    l->v[l->n++] = (struct piece){off, n, first};
    return true;
}

static bool pl_push_bytelevel(const sq_tok *t, plist *l, const char *s, size_t n, bool first) {
    if (!grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v)) return false;
    size_t off = l->buf.n;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)s[i];
        if (!sb_add(&l->buf, t->b2u[b], t->b2u_len[b])) return false;
    }
    l->v[l->n++] = (struct piece){off, l->buf.n - off, first};
    return true;
}

/* Applies one pre-tokenizer to every piece of in, into out. */
static sq_status pre_apply(enc *c, const pre_op *op, const plist *in, plist *out) {
    const sq_tok *t = c->t;
    out->n = 0;
    out->buf.n = 0;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->buf.p + in->v[i].off;
        size_t n = in->v[i].len;
        bool first = in->v[i].first;
        sq_status st;
        if (op->kind == PRE_SPLIT) {
            if ((st = pat_find_all(t, &op->pat, s, n, &c->m, c->err))) return st;
            if (!split_by(&c->m, n, op->behavior, op->invert, &c->seg, &c->tmp)) return NOMEM(c);
            for (size_t k = 0; k < c->seg.n; k++)
                if (!pl_push(out, s + c->seg.v[k].s, c->seg.v[k].e - c->seg.v[k].s, first && c->seg.v[k].s == 0))
                    return NOMEM(c);
        } else if (op->kind == PRE_METASPACE) {
            c->a.n = 0;
            bool pre = op->scheme == PREPEND_ALWAYS || (op->scheme == PREPEND_FIRST && first);
            if (!sb_add(&c->a, "", 0)) return NOMEM(c);
            for (size_t k = 0; k < n; k++)
                if (!(s[k] == ' ' ? sb_add(&c->a, op->str, op->len) : sb_add(&c->a, s + k, 1))) return NOMEM(c);
            if (pre && (c->a.n < op->len || memcmp(c->a.p, op->str, op->len) != 0)) {
                c->b.n = 0;
                if (!sb_add(&c->b, op->str, op->len) || !sb_add(&c->b, c->a.p, c->a.n)) return NOMEM(c);
                sb_swap(&c->a, &c->b);
            }
            if (!op->split) {
                if (c->a.n && !pl_push(out, c->a.p, c->a.n, first)) return NOMEM(c);
                continue;
            }
            c->m.n = 0;
            for (size_t p = 0; p + op->len <= c->a.n;) {
                const char *h = memmem(c->a.p + p, c->a.n - p, op->str, op->len);
                if (!h) break;
                size_t ms = (size_t)(h - c->a.p);
                if (!sv_push(&c->m, ms, ms + op->len, -1)) return NOMEM(c);
                p = ms + op->len;
            }
            if (!split_by(&c->m, c->a.n, B_MERGED_NEXT, false, &c->seg, &c->tmp)) return NOMEM(c);
            for (size_t k = 0; k < c->seg.n; k++)
                if (!pl_push(out, c->a.p + c->seg.v[k].s, c->seg.v[k].e - c->seg.v[k].s, first && c->seg.v[k].s == 0))
                    return NOMEM(c);
        } else { /* PRE_BYTELEVEL */
            c->a.n = 0;
            if (op->prefix && (n == 0 || s[0] != ' ') && !sb_add(&c->a, " ", 1)) return NOMEM(c);
            if (!sb_add(&c->a, s, n)) return NOMEM(c);
            if (!op->use_regex) {
                if (c->a.n && !pl_push_bytelevel(t, out, c->a.p, c->a.n, first)) return NOMEM(c);
                continue;
            }
            if ((st = re_find_all(t, t->gpt2_re, c->a.p, c->a.n, &c->m, c->err))) return st;
            if (!split_by(&c->m, c->a.n, B_ISOLATED, false, &c->seg, &c->tmp)) return NOMEM(c);
            for (size_t k = 0; k < c->seg.n; k++)
                if (!pl_push_bytelevel(t, out, c->a.p + c->seg.v[k].s, c->seg.v[k].e - c->seg.v[k].s,
                                       first && c->seg.v[k].s == 0))
                    return NOMEM(c);
        }
    }
    return SQ_OK;
}

static bool cand_less(struct cand x, struct cand y) { return x.rank < y.rank || (x.rank == y.rank && x.pos < y.pos); }

/* Stale entries stay queued until popped, so the heap can outgrow the symbol count: it grows here. */
static bool heap_push(enc *c, size_t *n, struct cand x) {
    if (!grow((void **)&c->heap, &c->heap_cap, *n + 1, sizeof *c->heap)) return false;
    struct cand *h = c->heap;
    size_t i = (*n)++;
    while (i > 0 && cand_less(x, h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
    return true;
}

static struct cand heap_pop(struct cand *h, size_t *n) {
    struct cand top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < *n && cand_less(h[l], x)) m = l;
        if (l + 1 < *n && cand_less(h[l + 1], m == i ? x : h[l])) m = l + 1;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    if (*n) h[i] = x;
    return top;
}

/* Looks up a vocabulary entry for one character of a word, with the subword prefix and suffix. */
static int char_id(enc *c, const char *ch, size_t cl, bool first, bool last, bool *oom) {
    const sq_tok *t = c->t;
    if ((first || !t->prefix) && (!last || !t->suffix)) return sm_get(&t->vocab, ch, cl);
    c->key.n = 0;
    bool ok = (first || !t->prefix || sb_add(&c->key, t->prefix, t->prefix_len)) && sb_add(&c->key, ch, cl) &&
              (!last || !t->suffix || sb_add(&c->key, t->suffix, t->suffix_len));
    if (!ok) { *oom = true; return -1; }
    return sm_get(&t->vocab, c->key.p, c->key.n);
}

static bool sym_push(enc *c, size_t *ns, int id, size_t len) {
    if (!grow((void **)&c->sym, &c->sym_cap, *ns + 1, sizeof *c->sym)) return false;
    c->sym[*ns] = (struct sym){id, (int)*ns - 1, (int)*ns + 1, len};
    (*ns)++;
    return true;
}

/* The BPE model on one word: characters (or byte fallback, or unk) to symbols, then the lowest-ranked
 * merge first, leftmost on ties, through a heap with lazy invalidation: O(n log n), so a whole file as
 * one word (stories260K has no pre-tokenizer) is fine. */
static sq_status bpe_word(enc *c, const char *w, size_t n, ivec *ids) {
    const sq_tok *t = c->t;
    if (n == 0) return SQ_OK;
    if (n > MAX_WORD) return sq_fail(c->err, SQ_ERR_ARG, "%s: a word of %zu bytes is too long to encode", t->path, n);
    if (t->ignore_merges) {
        int id = sm_get(&t->vocab, w, n);
        if (id >= 0) return iv_push(ids, id) ? SQ_OK : NOMEM(c);
    }
    size_t ns = 0;
    int unk_pend = -1; /* unk symbol not yet pushed, and its byte length */
    size_t unk_len = 0;
    bool oom = false;
    for (size_t i = 0; i < n;) {
        size_t cl = u8len((unsigned char)w[i]);
        if (cl > n - i) cl = n - i;
        int id = char_id(c, w + i, cl, i == 0, i + cl == n, &oom);
        if (oom) return NOMEM(c);
        if (id >= 0) {
            if (unk_pend >= 0 && !sym_push(c, &ns, unk_pend, unk_len)) return NOMEM(c);
            unk_pend = -1;
            if (!sym_push(c, &ns, id, cl)) return NOMEM(c);
            i += cl;
            continue;
        }
        if (t->byte_fallback) {
            bool all = true;
            for (size_t k = 0; k < cl; k++) all = all && t->byte_id[(unsigned char)w[i + k]] >= 0;
            if (all) {
                /* HF leaves a pending unk where it is here: it lands after these bytes */
                for (size_t k = 0; k < cl; k++)
                    if (!sym_push(c, &ns, t->byte_id[(unsigned char)w[i + k]], 1)) return NOMEM(c);
                i += cl;
                continue;
            }
        }
        if (t->unk_id >= 0) {
            if (unk_pend >= 0 && t->fuse_unk) unk_len += cl;
            else {
                if (unk_pend >= 0 && !sym_push(c, &ns, unk_pend, unk_len)) return NOMEM(c);
                unk_pend = t->unk_id;
                unk_len = cl;
            }
        }
        i += cl;
    }
    if (unk_pend >= 0 && !sym_push(c, &ns, unk_pend, unk_len)) return NOMEM(c);
    if (ns == 0) return SQ_OK;
    c->sym[ns - 1].next = -1;
    struct sym *y = c->sym;

    size_t nh = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
        const pm_slot *m = pm_get(&t->merges, y[i].id, y[i + 1].id);
        if (m && !heap_push(c, &nh, (struct cand){m->rank, (int32_t)i, m->id})) return NOMEM(c);
    }
    while (nh) {
        struct cand top = heap_pop(c->heap, &nh);
        struct sym *l = &y[top.pos];
        if (l->len == 0 || l->next < 0) continue; /* merged away, or nothing on its right any more */
        struct sym *r = &y[l->next];
        const pm_slot *m = pm_get(&t->merges, l->id, r->id);
        if (!m || m->id != top.id) continue; /* a neighbour changed since this pair was queued */
        l->id = top.id;
        l->len += r->len;
        l->next = r->next;
        r->len = 0;
        if (l->next >= 0) y[l->next].prev = top.pos;
        if (l->prev >= 0) {
            const pm_slot *pm = pm_get(&t->merges, y[l->prev].id, l->id);
            if (pm && !heap_push(c, &nh, (struct cand){pm->rank, l->prev, pm->id})) return NOMEM(c);
        }
        if (l->next >= 0) {
            const pm_slot *pm = pm_get(&t->merges, l->id, y[l->next].id);
            if (pm && !heap_push(c, &nh, (struct cand){pm->rank, top.pos, pm->id})) return NOMEM(c);
        }
    }
    for (int i = 0; i >= 0; i = y[i].next)
        if (!iv_push(ids, y[i].id)) return NOMEM(c);
    return SQ_OK;
}

/* Normalised text (already split from the raw-matched added tokens) to ids. */
static sq_status encode_segment(enc *c, const char *s, size_t n, bool first, bool parse_special, ivec *ids, plist pl[2]) {
    const sq_tok *t = c->t;
    sq_status st = normalize(c, s, n);
    if (st) return st;
    /* c->a is reused below, so the normalised text moves to its own buffer */
    sbuf norm = c->a;
    c->a = (sbuf){0};
    spanvec segs = {0};
    st = find_added(c, &t->norm_set, norm.p, norm.n, parse_special, &segs);
    for (size_t i = 0; !st && i < segs.n; i++) {
        span sg = segs.v[i];
        if (sg.id >= 0) {
            if (!iv_push(ids, sg.id)) st = NOMEM(c);
            continue;
        }
        pl[0].n = pl[0].buf.n = 0;
        if (!pl_push(&pl[0], norm.p + sg.s, sg.e - sg.s, first && sg.s == 0)) { st = NOMEM(c); break; }
        int cur = 0;
        for (size_t k = 0; !st && k < t->n_pre; k++) {
            st = pre_apply(c, &t->pre[k], &pl[cur], &pl[1 - cur]);
            cur = 1 - cur;
        }
        for (size_t k = 0; !st && k < pl[cur].n; k++) st = bpe_word(c, pl[cur].buf.p + pl[cur].v[k].off, pl[cur].v[k].len, ids);
    }
    free(segs.v);
    free(norm.p);
    return st;
}

sq_status sq_tok_encode(const sq_tok *t, const char *text, size_t n, bool parse_special, int **ids, int64_t *n_ids,
                        sq_err *err) {
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!t || !ids || !n_ids || (!text && n)) return sq_fail(err, SQ_ERR_ARG, "sq_tok_encode: NULL argument");
    enc c = {.t = t, .err = err};
    ivec out = {0};
    sbuf clean = {0};
    spanvec segs = {0};
    plist pl[2];
    memset(pl, 0, sizeof pl);
    sq_status st = SQ_OK;
    if (!sq_utf8_valid(text, n)) { /* bytes that are not UTF-8 become U+FFFD, as Python's errors="replace" does */
        if (!u8_lossy(text, n, &clean)) { st = NOMEM(&c); goto done; }
        text = clean.p;
        n = clean.n;
    }
    if ((st = find_added(&c, &t->raw_set, text, n, parse_special, &segs))) goto done;
    for (size_t i = 0; !st && i < segs.n; i++) {
        if (segs.v[i].id >= 0) {
            if (!iv_push(&out, segs.v[i].id)) st = NOMEM(&c);
        } else {
            st = encode_segment(&c, text + segs.v[i].s, segs.v[i].e - segs.v[i].s, segs.v[i].s == 0, parse_special, &out, pl);
        }
    }
    if (!st) {
        if (!out.v && !(out.v = malloc(sizeof *out.v))) st = NOMEM(&c);
        else {
            *ids = out.v;
            *n_ids = (int64_t)out.n;
            out.v = NULL;
        }
    }
done:
    free(out.v);
    free(clean.p);
    free(segs.v);
    for (int k = 0; k < 2; k++) {
        free(pl[k].buf.p);
        free(pl[k].v);
    }
    free(c.m.v);
    free(c.seg.v);
    free(c.tmp.v);
    free(c.a.p);
    free(c.b.p);
    free(c.sym);
    free(c.heap);
    free(c.key.p);
    return st;
}

/* ---------------------------------------------------------------- decoding */

/* A list of strings: spans of buf. */
typedef struct {
    sbuf buf;
    spanvec v;
} slist;

static bool sl_push(slist *l, const char *s, size_t n) {
    size_t off = l->buf.n;
    return sb_add(&l->buf, s, n) && sv_push(&l->v, off, off + n, -1);
}

static void sl_free(slist *l) {
    free(l->buf.p);
    free(l->v.v);
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* "<0xXX>" -> the byte, else -1 (Rust's u8::from_str_radix also takes "+X"). */
static int byte_token(const char *s, size_t n) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    if (s[3] == '+') return hexval(s[4]);
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

static sq_status dec_apply(const sq_tok *t, const dec_op *op, const slist *in, slist *out, sq_err *err) {
    out->buf.n = 0;
    out->v.n = 0;
    sq_status st = SQ_OK;
    bool ok = sb_add(&out->buf, "", 0);
    sbuf tmp = {0}, bytes = {0};
    spanvec m = {0};
    for (size_t i = 0; ok && !st && i < in->v.n; i++) {
        const char *s = in->buf.p + in->v.v[i].s;
        size_t n = in->v.v[i].e - in->v.v[i].s;
        switch (op->kind) {
        case DEC_REPLACE:
            st = pat_replace(t, &op->pat, s, n, op->str, op->len, &tmp, &m, err);
            ok = st || sl_push(out, tmp.p, tmp.n);
            break;
        case DEC_FUSE:
            if (i == 0) ok = sv_push(&out->v, 0, 0, -1);
            ok = ok && sb_add(&out->buf, s, n);
            out->v.v[0].e = out->buf.n;
            break;
        case DEC_BYTEFALLBACK: {
            /* a run of <0xXX> tokens becomes its text when it is UTF-8, else one U+FFFD per byte */
            int b = byte_token(s, n);
            if (b >= 0) {
                unsigned char ch = (unsigned char)b;
                ok = sb_add(&bytes, &ch, 1);
            }
            if (bytes.n && (b < 0 || i + 1 == in->v.n)) {
                if (sq_utf8_valid(bytes.p, bytes.n)) ok = ok && sl_push(out, bytes.p, bytes.n);
                else
                    for (size_t k = 0; ok && k < bytes.n; k++) ok = sl_push(out, "\xEF\xBF\xBD", 3);
                bytes.n = 0;
            }
            if (b < 0) ok = ok && sl_push(out, s, n);
            break;
        }
        case DEC_STRIP: {
            size_t count = 0, adv;
            for (size_t p = 0; p < n; p += u8len((unsigned char)s[p])) count++;
            size_t cut_l = 0, cut_r = 0, lo = 0, hi = n;
            while (cut_l < op->start && lo < n && u8dec(s + lo, n - lo, &adv) == op->cp) { lo += adv; cut_l++; }
            size_t rhi = n;
            while (cut_r < op->stop && rhi > 0) {
                size_t q = rhi - 1;
                while (q > 0 && ((unsigned char)s[q] & 0xC0) == 0x80) q--;
                if (u8dec(s + q, rhi - q, &adv) != op->cp) break;
                rhi = q;
                cut_r++;
            }
            /* cuts that overlap (a token of content characters only, shorter than start + stop)
             * make HF panic; an empty token is the sensible answer */
            hi = cut_l + cut_r <= count ? rhi : lo;
            ok = sl_push(out, s + lo, hi - lo);
            break;
        }
        case DEC_METASPACE: {
            tmp.n = 0;
            ok = sb_add(&tmp, "", 0);
            for (size_t p = 0; ok && p < n;) {
                if (n - p >= op->len && memcmp(s + p, op->str, op->len) == 0) {
                    if (!(i == 0 && op->prefix)) ok = sb_add(&tmp, " ", 1);
                    p += op->len;
                } else {
                    size_t l = u8len((unsigned char)s[p]);
                    if (l > n - p) l = n - p;
                    ok = sb_add(&tmp, s + p, l);
                    p += l;
                }
            }
            ok = ok && sl_push(out, tmp.p, tmp.n);
            break;
        }
        case DEC_BYTELEVEL: {
            /* each token back to bytes through the inverse map, or as it is when a character has no
             * byte (an added token); the whole is then read as UTF-8 with U+FFFD for bad bytes */
            size_t mark = bytes.n, adv;
            bool mapped = true;
            for (size_t p = 0; ok && p < n; p += adv) {
                uint32_t cp = u8dec(s + p, n - p, &adv);
                int b = cp < 0x144 ? t->u2b[cp] : -1;
                if (b < 0) { mapped = false; break; }
                unsigned char ch = (unsigned char)b;
                ok = sb_add(&bytes, &ch, 1);
            }
            if (!mapped) {
                bytes.n = mark;
                ok = ok && sb_add(&bytes, s, n);
            }
            if (ok && i + 1 == in->v.n) {
                tmp.n = 0;
                ok = sb_add(&tmp, "", 0) && u8_lossy(bytes.p, bytes.n, &tmp) && sl_push(out, tmp.p, tmp.n);
            }
            break;
        }
        }
    }
    free(tmp.p);
    free(bytes.p);
    free(m.v);
    if (!st && !ok) st = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
    return st;
}

sq_status sq_tok_decode(const sq_tok *t, const int *ids, int64_t n_ids, bool skip_special, char **text, size_t *len,
                        sq_err *err) {
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!t || !text || (!ids && n_ids) || n_ids < 0) return sq_fail(err, SQ_ERR_ARG, "sq_tok_decode: bad argument");
    slist l[2];
    memset(l, 0, sizeof l);
    sq_status st = SQ_OK;
    sbuf res = {0};
    bool ok = sb_add(&l[0].buf, "", 0) && sb_add(&res, "", 0);
    for (int64_t i = 0; ok && i < n_ids; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->flags[id] & F_PIECE)) {
            st = sq_fail(err, SQ_ERR_ARG, "%s: token id %d is out of range (vocabulary of %d)", t->path, id, t->n_ids);
            goto done;
        }
        if (skip_special && (t->flags[id] & F_SPECIAL)) continue;
        const char *p = t->pieces.p + t->piece_off[id];
        ok = sl_push(&l[0], p, strlen(p));
    }
    int cur = 0;
    if (!t->has_decoder) { /* HF joins the tokens with spaces when there is no decoder */
        for (size_t i = 0; ok && i < l[0].v.n; i++)
            ok = (i == 0 || sb_add(&res, " ", 1)) && sb_add(&res, l[0].buf.p + l[0].v.v[i].s, l[0].v.v[i].e - l[0].v.v[i].s);
    } else {
        for (size_t k = 0; ok && k < t->n_dec; k++) {
            if ((st = dec_apply(t, &t->dec[k], &l[cur], &l[1 - cur], err))) goto done;
            cur = 1 - cur;
        }
        for (size_t i = 0; ok && i < l[cur].v.n; i++)
            ok = sb_add(&res, l[cur].buf.p + l[cur].v.v[i].s, l[cur].v.v[i].e - l[cur].v.v[i].s);
    }
    if (!ok) {
        st = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
        goto done;
    }
    *text = res.p;
    if (len) *len = res.n;
    res.p = NULL;
done:
    free(res.p);
    sl_free(&l[0]);
    sl_free(&l[1]);
    return st;
}

/* ---------------------------------------------------------------- reading tokenizer.json */

static const cJSON *jget(const cJSON *o, const char *k) {
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
}

static bool jabsent(const cJSON *x) { return !x || cJSON_IsNull(x); }

/* A string field: absent or null gives NULL when optional; it must be UTF-8 (the text it works on is). */
static sq_status jstr(const sq_tok *t, const cJSON *o, const char *k, bool required, const char *what, const char **out,
                      sq_err *err) {
    const cJSON *x = jget(o, k);
    *out = NULL;
    if (jabsent(x)) {
        if (required) return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: missing \"%s\"", t->path, what, k);
        return SQ_OK;
    }
    if (!cJSON_IsString(x) || !x->valuestring)
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: \"%s\" is not a string", t->path, what, k);
    if (!sq_utf8_valid(x->valuestring, strlen(x->valuestring)))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: \"%s\" is not valid UTF-8", t->path, what, k);
    *out = x->valuestring;
    return SQ_OK;
}

static sq_status jbool(const sq_tok *t, const cJSON *o, const char *k, bool def, const char *what, bool *out, sq_err *err) {
    const cJSON *x = jget(o, k);
    *out = def;
    if (jabsent(x)) return SQ_OK;
    if (!cJSON_IsBool(x)) return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: \"%s\" is not true or false", t->path, what, k);
    *out = cJSON_IsTrue(x);
    return SQ_OK;
}

/* A whole number in [0, max). */
static bool jint_ok(const cJSON *x, double max) {
    return cJSON_IsNumber(x) && x->valuedouble >= 0 && x->valuedouble < max && x->valuedouble == floor(x->valuedouble);
}

static sq_status dup_str(const sq_tok *t, const char *s, char **out, size_t *len, sq_err *err) {
    size_t n = strlen(s);
    *out = malloc(n + 1);
    if (!*out) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
    memcpy(*out, s, n + 1);
    if (len) *len = n;
    return SQ_OK;
}

/* {"String": s} or {"Regex": r}. */
static sq_status parse_pattern(const sq_tok *t, const cJSON *node, const char *what, pattern *p, sq_err *err) {
    const cJSON *pat = jget(node, "pattern");
    const char *s;
    sq_status st;
    if (jget(pat, "String")) {
        if ((st = jstr(t, pat, "String", true, what, &s, err))) return st;
        return pat_compile(t, p, s, true, what, err);
    }
    if (jget(pat, "Regex")) {
        if ((st = jstr(t, pat, "Regex", true, what, &s, err))) return st;
        return pat_compile(t, p, s, false, what, err);
    }
    return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: \"pattern\" is neither {\"String\": ...} nor {\"Regex\": ...}", t->path, what);
}

static sq_status node_type(const sq_tok *t, const cJSON *node, const char *what, const char **type, sq_err *err) {
    if (!cJSON_IsObject(node)) return sq_fail(err, SQ_ERR_FORMAT, "%s: %s is not an object", t->path, what);
    return jstr(t, node, "type", true, what, type, err);
}

static sq_status unsupported(const sq_tok *t, const char *what, const char *type, sq_err *err) {
    return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: %s type \"%s\" is not supported", t->path, what, type);
}

/* Appends a zeroed element to a small array (a handful of pipeline steps, so no capacity kept). */
static void *push_zeroed(void **arr, size_t *n, size_t elem) {
    void *q = realloc(*arr, (*n + 1) * elem);
    if (!q) return NULL;
    *arr = q;
    char *e = (char *)q + (*n)++ * elem;
    memset(e, 0, elem);
    return e;
}

/* A single character (Metaspace replacement, Strip content): HF holds these as a Rust char. */
static sq_status one_char(const sq_tok *t, const char *s, const char *what, sq_err *err) {
    size_t n = strlen(s), adv;
    if (n == 0 || (u8dec(s, n, &adv), adv != n))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: \"%s\" should be one character", t->path, what, s);
    return SQ_OK;
}

static sq_status parse_scheme(const sq_tok *t, const cJSON *node, const char *what, int *scheme, sq_err *err) {
    const char *s;
    sq_status st = jstr(t, node, "prepend_scheme", false, what, &s, err);
    if (st) return st;
    if (!s) { /* files from before prepend_scheme: add_prefix_space */
        bool aps;
        if ((st = jbool(t, node, "add_prefix_space", true, what, &aps, err))) return st;
        *scheme = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
    } else if (!strcmp(s, "always")) *scheme = PREPEND_ALWAYS;
    else if (!strcmp(s, "first")) *scheme = PREPEND_FIRST;
    else if (!strcmp(s, "never")) *scheme = PREPEND_NEVER;
    else return sq_fail(err, SQ_ERR_FORMAT, "%s: %s: unknown prepend_scheme \"%s\"", t->path, what, s);
    return SQ_OK;
}

static sq_status parse_normalizer(sq_tok *t, const cJSON *node, sq_err *err) {
    const char *what = "normalizer", *type, *s;
    if (jabsent(node)) return SQ_OK;
    sq_status st = node_type(t, node, what, &type, err);
    if (st) return st;
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = jget(node, "normalizers"), *x;
        if (!cJSON_IsArray(arr)) return sq_fail(err, SQ_ERR_FORMAT, "%s: normalizer Sequence without a \"normalizers\" list", t->path);
        cJSON_ArrayForEach(x, arr) if ((st = parse_normalizer(t, x, err))) return st;
        return SQ_OK;
    }
    norm_op *op;
    if (strcmp(type, "Replace") && strcmp(type, "Prepend") && strcmp(type, "Strip") && strcmp(type, "NFC"))
        return unsupported(t, what, type, err);
    if (!(op = push_zeroed((void **)&t->norm, &t->n_norm, sizeof *op))) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
    if (!strcmp(type, "Replace")) {
        op->kind = NORM_REPLACE;
        if ((st = parse_pattern(t, node, "normalizer Replace", &op->pat, err))) return st;
        if ((st = jstr(t, node, "content", true, "normalizer Replace", &s, err))) return st;
        return dup_str(t, s, &op->str, &op->len, err);
    }
    if (!strcmp(type, "Prepend")) {
        op->kind = NORM_PREPEND;
        if ((st = jstr(t, node, "prepend", true, "normalizer Prepend", &s, err))) return st;
        return dup_str(t, s, &op->str, &op->len, err);
    }
    if (!strcmp(type, "Strip")) {
        op->kind = NORM_STRIP;
        if ((st = jbool(t, node, "strip_left", true, "normalizer Strip", &op->left, err))) return st;
        return jbool(t, node, "strip_right", true, "normalizer Strip", &op->right, err);
    }
    op->kind = NORM_NFC;
    return SQ_OK;
}

static sq_status need_gpt2_re(sq_tok *t, sq_err *err) {
    if (t->gpt2_re) return SQ_OK;
    pattern p = {0};
    sq_status st = pat_compile(t, &p, GPT2_PATTERN, false, "ByteLevel", err);
    t->gpt2_re = p.re;
    return st;
}

static sq_status parse_pretokenizer(sq_tok *t, const cJSON *node, sq_err *err) {
    const char *what = "pre_tokenizer", *type, *s;
    if (jabsent(node)) return SQ_OK;
    sq_status st = node_type(t, node, what, &type, err);
    if (st) return st;
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = jget(node, "pretokenizers"), *x;
        if (!cJSON_IsArray(arr)) return sq_fail(err, SQ_ERR_FORMAT, "%s: pre_tokenizer Sequence without a \"pretokenizers\" list", t->path);
        cJSON_ArrayForEach(x, arr) if ((st = parse_pretokenizer(t, x, err))) return st;
        return SQ_OK;
    }
    static const char *const known[] = {"Metaspace", "ByteLevel", "Split", "Digits", "Whitespace", "WhitespaceSplit"};
    size_t k = 0;
    while (k < 6 && strcmp(type, known[k])) k++;
    if (k == 6) return unsupported(t, what, type, err);
    pre_op *op = push_zeroed((void **)&t->pre, &t->n_pre, sizeof *op);
    if (!op) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
    op->kind = PRE_SPLIT;
    switch (k) {
    case 0:
        op->kind = PRE_METASPACE;
        if ((st = jstr(t, node, "replacement", true, "pre_tokenizer Metaspace", &s, err))) return st;
        if ((st = one_char(t, s, "pre_tokenizer Metaspace replacement", err))) return st;
        if ((st = dup_str(t, s, &op->str, &op->len, err))) return st;
        if ((st = parse_scheme(t, node, "pre_tokenizer Metaspace", &op->scheme, err))) return st;
        return jbool(t, node, "split", true, "pre_tokenizer Metaspace", &op->split, err);
    case 1:
        op->kind = PRE_BYTELEVEL;
        if ((st = jbool(t, node, "add_prefix_space", true, "pre_tokenizer ByteLevel", &op->prefix, err))) return st;
        if ((st = jbool(t, node, "use_regex", true, "pre_tokenizer ByteLevel", &op->use_regex, err))) return st;
        return op->use_regex ? need_gpt2_re(t, err) : SQ_OK;
    case 2: {
        static const char *const beh[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        if ((st = parse_pattern(t, node, "pre_tokenizer Split", &op->pat, err))) return st;
        if ((st = jstr(t, node, "behavior", true, "pre_tokenizer Split", &s, err))) return st;
        for (op->behavior = 0; op->behavior < 5 && strcmp(s, beh[op->behavior]); op->behavior++) {}
        if (op->behavior == 5) return sq_fail(err, SQ_ERR_FORMAT, "%s: pre_tokenizer Split: unknown behavior \"%s\"", t->path, s);
        return jbool(t, node, "invert", false, "pre_tokenizer Split", &op->invert, err);
    }
    case 3: { /* char::is_numeric, each digit alone or runs together */
        bool each;
        if ((st = jbool(t, node, "individual_digits", false, "pre_tokenizer Digits", &each, err))) return st;
        op->behavior = each ? B_ISOLATED : B_CONTIGUOUS;
        return pat_compile(t, &op->pat, "\\p{N}", false, "pre_tokenizer Digits", err);
    }
    case 4: /* the matches of \w+|[^\w\s]+ are the words; the rest goes */
        op->behavior = B_REMOVED;
        op->invert = true;
        return pat_compile(t, &op->pat, "[" RUST_W "]+|[^" RUST_W ONIG_S "]+", false, "pre_tokenizer Whitespace", err);
    default: /* WhitespaceSplit: char::is_whitespace */
        op->behavior = B_REMOVED;
        return pat_compile(t, &op->pat, "[" ONIG_S "]", false, "pre_tokenizer WhitespaceSplit", err);
    }
}

static sq_status parse_decoder(sq_tok *t, const cJSON *node, sq_err *err) {
    const char *what = "decoder", *type, *s;
    sq_status st = node_type(t, node, what, &type, err);
    if (st) return st;
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = jget(node, "decoders"), *x;
        if (!cJSON_IsArray(arr)) return sq_fail(err, SQ_ERR_FORMAT, "%s: decoder Sequence without a \"decoders\" list", t->path);
        cJSON_ArrayForEach(x, arr) if ((st = parse_decoder(t, x, err))) return st;
        return SQ_OK;
    }
    static const char *const known[] = {"Replace", "ByteFallback", "Fuse", "Strip", "Metaspace", "ByteLevel"};
    int k = 0;
    while (k < 6 && strcmp(type, known[k])) k++;
    if (k == 6) return unsupported(t, what, type, err);
    dec_op *op = push_zeroed((void **)&t->dec, &t->n_dec, sizeof *op);
    if (!op) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
    op->kind = k; /* known[] is in DEC_* order */
    if (k == DEC_REPLACE) {
        if ((st = parse_pattern(t, node, "decoder Replace", &op->pat, err))) return st;
        if ((st = jstr(t, node, "content", true, "decoder Replace", &s, err))) return st;
        return dup_str(t, s, &op->str, &op->len, err);
    }
    if (k == DEC_STRIP) {
        const cJSON *a = jget(node, "start"), *b = jget(node, "stop");
        if ((st = jstr(t, node, "content", true, "decoder Strip", &s, err))) return st;
        if ((st = one_char(t, s, "decoder Strip content", err))) return st;
        size_t adv;
        op->cp = u8dec(s, strlen(s), &adv);
        if (!jint_ok(a, 1e15) || !jint_ok(b, 1e15))
            return sq_fail(err, SQ_ERR_FORMAT, "%s: decoder Strip: \"start\" and \"stop\" must be counts", t->path);
        op->start = (size_t)a->valuedouble;
        op->stop = (size_t)b->valuedouble;
        return SQ_OK;
    }
    if (k == DEC_METASPACE) {
        int scheme;
        if ((st = jstr(t, node, "replacement", true, "decoder Metaspace", &s, err))) return st;
        if ((st = one_char(t, s, "decoder Metaspace replacement", err))) return st;
        if ((st = parse_scheme(t, node, "decoder Metaspace", &scheme, err))) return st;
        op->prefix = scheme != PREPEND_NEVER;
        return dup_str(t, s, &op->str, &op->len, err);
    }
    return SQ_OK;
}

/* The id a post-processor puts before sequence A (first one found), into t->bos. */
static sq_status parse_post(sq_tok *t, const cJSON *node, sq_err *err) {
    const char *what = "post_processor", *type;
    if (jabsent(node)) return SQ_OK;
    sq_status st = node_type(t, node, what, &type, err);
    if (st) return st;
    if (!strcmp(type, "Sequence")) {
        const cJSON *arr = jget(node, "processors"), *x;
        if (!cJSON_IsArray(arr)) return sq_fail(err, SQ_ERR_FORMAT, "%s: post_processor Sequence without a \"processors\" list", t->path);
        cJSON_ArrayForEach(x, arr) if ((st = parse_post(t, x, err))) return st;
        return SQ_OK;
    }
    if (!strcmp(type, "ByteLevel")) return SQ_OK;
    int id = -1;
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        const cJSON *cls = jget(node, "cls");
        if (!cJSON_IsArray(cls) || cJSON_GetArraySize(cls) != 2)
            return sq_fail(err, SQ_ERR_FORMAT, "%s: post_processor %s: \"cls\" is not [token, id]", t->path, type);
        const cJSON *x = cJSON_GetArrayItem(cls, 1);
        if (!jint_ok(x, MAX_ID)) return sq_fail(err, SQ_ERR_FORMAT, "%s: post_processor %s: bad cls id", t->path, type);
        id = (int)x->valuedouble;
    } else if (!strcmp(type, "TemplateProcessing")) {
        const cJSON *single = jget(node, "single"), *specials = jget(node, "special_tokens"), *x;
        if (!cJSON_IsArray(single))
            return sq_fail(err, SQ_ERR_FORMAT, "%s: post_processor TemplateProcessing: \"single\" is not a list", t->path);
        cJSON_ArrayForEach(x, single) {
            if (jget(x, "Sequence")) break;
            const cJSON *sp = jget(x, "SpecialToken");
            if (!sp) continue;
            const char *name;
            if ((st = jstr(t, sp, "id", true, "post_processor SpecialToken", &name, err))) return st;
            const cJSON *ids = jget(jget(specials, name), "ids");
            if (!cJSON_IsArray(ids))
                return sq_fail(err, SQ_ERR_FORMAT, "%s: post_processor: special token \"%s\" is not in special_tokens", t->path, name);
            const cJSON *first = cJSON_GetArrayItem(ids, 0);
            if (!first) continue; /* a special token with no ids adds nothing */
            if (!jint_ok(first, MAX_ID)) return sq_fail(err, SQ_ERR_FORMAT, "%s: post_processor: bad id for \"%s\"", t->path, name);
            id = (int)first->valuedouble;
            break;
        }
    } else {
        return unsupported(t, what, type, err);
    }
    if (id >= 0 && (id >= t->n_ids || !(t->flags[id] & F_PIECE)))
        return sq_fail(err, SQ_ERR_FORMAT, "%s: post_processor: id %d is out of range (vocabulary of %d)", t->path, id, t->n_ids);
    if (t->bos < 0 && id >= 0) {
        t->bos = id;
        snprintf(t->bos_rule, sizeof t->bos_rule, "tokenizer.json's post_processor (%s)", type);
    }
    return SQ_OK;
}

static sq_status parse_merges(sq_tok *t, const cJSON *merges, sq_err *err) {
    const cJSON *m;
    sbuf joined = {0};
    sq_status st = SQ_OK;
    size_t rank = 0;
    char *line = NULL;
    cJSON_ArrayForEach(m, merges) {
        const char *a, *b;
        if (cJSON_IsString(m) && m->valuestring) { /* "a b": exactly one space */
            free(line);
            size_t n = strlen(m->valuestring);
            if (!(line = malloc(n + 1))) { st = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path); break; }
            memcpy(line, m->valuestring, n + 1);
            char *sp = strchr(line, ' ');
            if (!sp || strchr(sp + 1, ' ')) { st = sq_fail(err, SQ_ERR_FORMAT, "%s: merge %zu (\"%s\") is not two tokens split by one space", t->path, rank, line); break; }
            *sp = 0;
            a = line;
            b = sp + 1;
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) && cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            b = m->child->next->valuestring;
        } else {
            st = sq_fail(err, SQ_ERR_FORMAT, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", t->path, rank);
            break;
        }
        size_t la = strlen(a), lb = strlen(b);
        int ia = sm_get(&t->vocab, a, la), ib = sm_get(&t->vocab, b, lb);
        if (ia < 0 || ib < 0) { st = sq_fail(err, SQ_ERR_FORMAT, "%s: merge %zu: \"%s\" is not in the vocabulary", t->path, rank, ia < 0 ? a : b); break; }
        if (t->prefix && lb >= t->prefix_len && !memcmp(b, t->prefix, t->prefix_len)) { b += t->prefix_len; lb -= t->prefix_len; }
        joined.n = 0;
        if (!sb_add(&joined, a, la) || !sb_add(&joined, b, lb)) { st = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path); break; }
        int id = sm_get(&t->vocab, joined.p, joined.n);
        if (id < 0) { st = sq_fail(err, SQ_ERR_FORMAT, "%s: merge %zu: \"%s\" is not in the vocabulary", t->path, rank, joined.p); break; }
        if (rank >= INT32_MAX || !pm_put(&t->merges, (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib, (int32_t)rank, id)) {
            st = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
            break;
        }
        rank++;
    }
    free(line);
    free(joined.p);
    return st;
}

static int cmp_match(const void *x, const void *y) {
    const size_t *a = x, *b = y; /* {first byte, length, index} */
    if (a[0] != b[0]) return a[0] < b[0] ? -1 : 1;
    if (a[1] != b[1]) return a[1] > b[1] ? -1 : 1;
    return a[2] < b[2] ? -1 : a[2] > b[2];
}

static sq_status build_set(sq_tok *t, match_set *ms, bool normalized, sq_err *err) {
    size_t n = 0;
    for (size_t i = 0; i < t->n_added; i++) n += t->added[i].normalized == normalized && t->added[i].match_len > 0;
    size_t (*key)[3] = malloc((n ? n : 1) * sizeof *key);
    ms->idx = malloc((n ? n : 1) * sizeof *ms->idx);
    if (!key || !ms->idx) {
        free(key);
        return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
    }
    size_t k = 0;
    for (size_t i = 0; i < t->n_added; i++) {
        const added_tok *a = &t->added[i];
        if (a->normalized != normalized || !a->match_len) continue;
        key[k][0] = (unsigned char)a->match[0];
        key[k][1] = a->match_len;
        key[k][2] = i;
        k++;
    }
    qsort(key, n, sizeof *key, cmp_match);
    memset(ms->first, 0, sizeof ms->first);
    for (size_t i = 0; i < n; i++) {
        ms->idx[i] = (int)key[i][2];
        ms->first[key[i][0] + 1]++;
    }
    for (int b = 0; b < 256; b++) ms->first[b + 1] += ms->first[b];
    ms->n = n;
    free(key);
    return SQ_OK;
}

void sq_tok_free(sq_tok *t) {
    if (!t) return;
    free(t->path);
    free(t->piece_off);
    free(t->flags);
    free(t->pieces.p);
    sm_free(&t->vocab);
    sm_free(&t->added_map);
    free(t->merges.slot);
    free(t->prefix);
    free(t->suffix);
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].match != t->added[i].content) free(t->added[i].match);
        free(t->added[i].content);
    }
    free(t->added);
    free(t->raw_set.idx);
    free(t->norm_set.idx);
    for (size_t i = 0; i < t->n_norm; i++) { pat_free(&t->norm[i].pat); free(t->norm[i].str); }
    for (size_t i = 0; i < t->n_pre; i++) { pat_free(&t->pre[i].pat); free(t->pre[i].str); }
    for (size_t i = 0; i < t->n_dec; i++) { pat_free(&t->dec[i].pat); free(t->dec[i].str); }
    free(t->norm);
    free(t->pre);
    free(t->dec);
    pcre2_code_free(t->gpt2_re);
    pcre2_code_free(t->word_re);
    pcre2_match_context_free(t->mctx);
    free(t);
}

/* The GPT-2 byte -> unicode map: printable Latin-1 bytes stand for themselves, the other 68 bytes take
 * U+0100 onwards in byte order, so every byte becomes a visible character. */
static void build_byte_map(sq_tok *t) {
    int next = 0;
    for (int i = 0; i < 0x144; i++) t->u2b[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        uint32_t cp = keep ? (uint32_t)b : 256u + (uint32_t)next++;
        char tmp[4];
        t->b2u_len[b] = (uint8_t)u8enc(cp, tmp);
        memcpy(t->b2u[b], tmp, t->b2u_len[b]);
        t->u2b[cp] = (int16_t)b;
    }
}

static sq_status parse_model(sq_tok *t, const cJSON *root, sq_err *err) {
    const cJSON *model = jget(root, "model"), *added = jget(root, "added_tokens"), *x;
    const char *type, *s;
    sq_status st;
    if (!cJSON_IsObject(model)) return sq_fail(err, SQ_ERR_FORMAT, "%s: no \"model\" object", t->path);
    if ((st = jstr(t, model, "type", false, "model", &type, err))) return st;
    if (type && strcmp(type, "BPE")) return unsupported(t, "model", type, err);
    const cJSON *vocab = jget(model, "vocab"), *merges = jget(model, "merges");
    if (!cJSON_IsObject(vocab)) return sq_fail(err, SQ_ERR_FORMAT, "%s: model has no \"vocab\" object", t->path);
    if (!jabsent(merges) && !cJSON_IsArray(merges)) return sq_fail(err, SQ_ERR_FORMAT, "%s: model \"merges\" is not a list", t->path);
    if (!jabsent(added) && !cJSON_IsArray(added)) return sq_fail(err, SQ_ERR_FORMAT, "%s: \"added_tokens\" is not a list", t->path);

    /* The model's ids, then the added tokens'. HF does not take an added token's id from the file: it
     * gives it the id its text already has (an earlier added token's, or the model's), or else the next
     * one after the model vocabulary and the added ids so far (warning when that differs from the
     * file). Files HF wrote agree with that; for the others, the ids HF uses are what count. */
    size_t count = 0;
    int max_id = -1, max_added = -1;
    cJSON_ArrayForEach(x, vocab) {
        if (!jint_ok(x, MAX_ID))
            return sq_fail(err, SQ_ERR_FORMAT, "%s: vocab entry \"%s\": id out of range", t->path, x->string ? x->string : "");
        size_t n = strlen(x->string);
        if (!sq_utf8_valid(x->string, n)) return sq_fail(err, SQ_ERR_FORMAT, "%s: vocab entry %zu is not valid UTF-8", t->path, count);
        if (!sm_put(&t->vocab, x->string, n, (int)x->valuedouble)) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
        if ((int)x->valuedouble > max_id) max_id = (int)x->valuedouble;
        count++;
    }
    cJSON_ArrayForEach(x, added) {
        added_tok *a = push_zeroed((void **)&t->added, &t->n_added, sizeof *a);
        if (!a) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
        const cJSON *id = jget(x, "id");
        if (!jint_ok(id, MAX_ID)) return sq_fail(err, SQ_ERR_FORMAT, "%s: added token %zu: id missing or out of range", t->path, t->n_added - 1);
        if ((st = jstr(t, x, "content", true, "added token", &s, err))) return st;
        if ((st = dup_str(t, s, &a->content, &a->len, err))) return st;
        a->match = a->content;
        a->match_len = a->len;
        if ((st = jbool(t, x, "special", false, "added token", &a->special, err)) ||
            (st = jbool(t, x, "lstrip", false, "added token", &a->lstrip, err)) ||
            (st = jbool(t, x, "rstrip", false, "added token", &a->rstrip, err)) ||
            (st = jbool(t, x, "single_word", false, "added token", &a->single_word, err)) ||
            (st = jbool(t, x, "normalized", !a->special, "added token", &a->normalized, err)))
            return st;
        a->id = sm_get(&t->added_map, a->content, a->len);
        if (a->id < 0) a->id = sm_get(&t->vocab, a->content, a->len);
        if (a->id < 0) a->id = max_added >= (int)t->vocab.n || t->vocab.n == 0 ? max_added + 1 : (int)t->vocab.n;
        if (a->id >= MAX_ID) return sq_fail(err, SQ_ERR_FORMAT, "%s: added token %zu: id out of range", t->path, t->n_added - 1);
        if (!sm_put(&t->added_map, a->content, a->len, a->id)) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
        if (a->id > max_added) max_added = a->id;
        if (a->id > max_id) max_id = a->id;
        count++;
    }
    if (max_id < 0) return sq_fail(err, SQ_ERR_FORMAT, "%s: empty vocabulary", t->path);
    if ((size_t)max_id > 2 * count + 4096) /* ids are dense in every real tokenizer */
        return sq_fail(err, SQ_ERR_FORMAT, "%s: id %d is out of range for a vocabulary of %zu tokens", t->path, max_id, count);
    t->n_ids = max_id + 1;
    t->piece_off = malloc((size_t)t->n_ids * sizeof *t->piece_off);
    t->flags = calloc((size_t)t->n_ids, 1);
    if (!t->piece_off || !t->flags) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
    cJSON_ArrayForEach(x, vocab) {
        int id = (int)x->valuedouble;
        if (t->flags[id] & F_PIECE) continue; /* two strings for one id: the first names it */
        t->piece_off[id] = t->pieces.n;
        if (!sb_add(&t->pieces, x->string, strlen(x->string) + 1)) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
        t->flags[id] = F_PIECE;
    }
    for (size_t i = 0; i < t->n_added; i++) {
        const added_tok *a = &t->added[i];
        t->piece_off[a->id] = t->pieces.n;
        if (!sb_add(&t->pieces, a->content, a->len + 1)) return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", t->path);
        t->flags[a->id] = F_PIECE | (a->special ? F_SPECIAL : 0);
    }

    /* BPE options */
    const cJSON *dropout = jget(model, "dropout");
    if (!jabsent(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return sq_fail(err, SQ_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", t->path);
    if ((st = jstr(t, model, "continuing_subword_prefix", false, "model", &s, err))) return st;
    if (s && *s && (st = dup_str(t, s, &t->prefix, &t->prefix_len, err))) return st;
    if ((st = jstr(t, model, "end_of_word_suffix", false, "model", &s, err))) return st;
    if (s && *s && (st = dup_str(t, s, &t->suffix, &t->suffix_len, err))) return st;
    if ((st = jstr(t, model, "unk_token", false, "model", &s, err))) return st;
    t->unk_id = s ? sm_get(&t->vocab, s, strlen(s)) : -1; /* an unk_token outside the vocab drops unknowns */
    if ((st = jbool(t, model, "fuse_unk", false, "model", &t->fuse_unk, err)) ||
        (st = jbool(t, model, "byte_fallback", false, "model", &t->byte_fallback, err)) ||
        (st = jbool(t, model, "ignore_merges", false, "model", &t->ignore_merges, err)))
        return st;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = sm_get(&t->vocab, name, 6);
    }
    return merges ? parse_merges(t, merges, err) : SQ_OK;
}

sq_status sq_tok_parse(sq_tok **out, const char *json, size_t len, const char *path, sq_err *err) {
    if (!out) return sq_fail(err, SQ_ERR_ARG, "sq_tok_parse: out is NULL");
    *out = NULL;
    if (!path) path = "tokenizer.json";
    if (!json) return sq_fail(err, SQ_ERR_ARG, "%s: no JSON text", path);
    sq_tok *t = calloc(1, sizeof *t);
    if (!t || !(t->path = malloc(strlen(path) + 1))) {
        free(t);
        return sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", path);
    }
    strcpy(t->path, path);
    t->bos = -1;
    snprintf(t->bos_rule, sizeof t->bos_rule, "tokenizer.json's post_processor adds none");
    t->unk_id = -1;
    build_byte_map(t);
    sq_status st = SQ_OK;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *ep = cJSON_GetErrorPtr();
        size_t at = ep && ep >= json && ep <= json + len ? (size_t)(ep - json) : 0;
        st = sq_fail(err, SQ_ERR_FORMAT, "%s: malformed JSON near byte %zu", path, at);
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        st = sq_fail(err, SQ_ERR_FORMAT, "%s: not a JSON object", path);
        goto done;
    }
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->mctx) {
        st = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    pcre2_set_match_limit(t->mctx, RE_MATCH_LIMIT);
    pcre2_set_depth_limit(t->mctx, RE_MATCH_LIMIT);
    pcre2_set_heap_limit(t->mctx, RE_HEAP_LIMIT_KIB);
    if ((st = parse_model(t, root, err))) goto done;
    if ((st = parse_normalizer(t, jget(root, "normalizer"), err))) goto done;
    if ((st = parse_pretokenizer(t, jget(root, "pre_tokenizer"), err))) goto done;
    const cJSON *dec = jget(root, "decoder");
    t->has_decoder = !jabsent(dec);
    if (t->has_decoder && (st = parse_decoder(t, dec, err))) goto done;
    if ((st = parse_post(t, jget(root, "post_processor"), err))) goto done;

    /* normalized added tokens are looked for in normalised text, so they are normalised too */
    bool single_word = false;
    for (size_t i = 0; i < t->n_added; i++) {
        added_tok *a = &t->added[i];
        single_word |= a->single_word;
        if (!a->normalized || !t->n_norm) continue;
        enc c = {.t = t, .err = err};
        sq_status ns = normalize(&c, a->content, a->len);
        if (ns == SQ_OK) {
            a->match = c.a.p;
            a->match_len = c.a.n;
            c.a.p = NULL;
            /* HF names the token by its normalised text too (id_to_token, decode) */
            t->piece_off[a->id] = t->pieces.n;
            if (!sb_add(&t->pieces, a->match, a->match_len + 1)) st = sq_fail(err, SQ_ERR_NOMEM, "%s: out of memory", path);
        } else if (ns != SQ_ERR_UNSUPPORTED) {
            st = ns;
        } /* text NFC would change: keep the content as it is */
        free(c.a.p);
        free(c.b.p);
        free(c.m.v);
        if (st) goto done;
    }
    if ((st = build_set(t, &t->raw_set, false, err)) || (st = build_set(t, &t->norm_set, true, err))) goto done;
    if (single_word) {
        pattern p = {0};
        st = pat_compile(t, &p, "[" RUST_W "]", false, "single_word", err);
        t->word_re = p.re;
    }
done:
    cJSON_Delete(root);
    if (st) {
        sq_tok_free(t);
        return st;
    }
    *out = t;
    return SQ_OK;
}

/* tokenizer_config.json beside tokenizer.json decides the BOS when it has add_bos_token, as
 * transformers' tokenizers and llama.cpp's converter read it; otherwise the post-processor does. */
static sq_status apply_tokenizer_config(sq_tok *t, const char *tok_path, sq_err *err) {
    char cfg[4200];
    const char *slash = strrchr(tok_path, '/');
    int dl = slash ? (int)(slash - tok_path) : 0;
    snprintf(cfg, sizeof cfg, "%.*s%stokenizer_config.json", dl, tok_path, slash ? "/" : "");
    if (access(cfg, F_OK) != 0) return SQ_OK; /* optional */
    char *buf;
    size_t n;
    sq_status st = sq_read_file(cfg, &buf, &n, err);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(buf, n);
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: not a JSON object", cfg);
    }
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(root, "add_bos_token");
    if (add && !cJSON_IsNull(add) && !cJSON_IsBool(add)) {
        cJSON_Delete(root);
        return sq_fail(err, SQ_ERR_FORMAT, "%s: add_bos_token is not true or false", cfg);
    }
    if (cJSON_IsFalse(add)) {
        t->bos = -1;
        snprintf(t->bos_rule, sizeof t->bos_rule, "tokenizer_config.json's add_bos_token false");
    } else if (cJSON_IsTrue(add)) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "bos_token");
        if (cJSON_IsObject(b)) b = cJSON_GetObjectItemCaseSensitive(b, "content");
        int id = cJSON_IsString(b) ? sq_tok_id(t, b->valuestring) : -1;
        if (id < 0 && t->bos < 0) {
            st = sq_fail(err, SQ_ERR_FORMAT, "%s: add_bos_token is true but bos_token %s%s%s is not in %s", cfg, cJSON_IsString(b) ? "\"" : "",
                         cJSON_IsString(b) ? b->valuestring : "(none)", cJSON_IsString(b) ? "\"" : "", t->path);
            cJSON_Delete(root);
            return st;
        }
        if (id >= 0) t->bos = id;
        snprintf(t->bos_rule, sizeof t->bos_rule, "tokenizer_config.json's add_bos_token true");
    }
    cJSON_Delete(root);
    return SQ_OK;
}

sq_status sq_tok_load(sq_tok **out, const char *path, sq_err *err) {
    if (!out || !path) return sq_fail(err, SQ_ERR_ARG, "sq_tok_load: NULL argument");
    *out = NULL;
    char *buf;
    size_t n;
    sq_status st = sq_read_file(path, &buf, &n, err);
    if (st) return st;
    st = sq_tok_parse(out, buf, n, path, err);
    free(buf);
    if (!st) st = apply_tokenizer_config(*out, path, err);
    if (st) {
        sq_tok_free(*out);
        *out = NULL;
    }
    return st;
}

int sq_tok_vocab_size(const sq_tok *t) { return t ? t->n_ids : 0; }

const char *sq_tok_piece(const sq_tok *t, int id) {
    if (!t || id < 0 || id >= t->n_ids || !(t->flags[id] & F_PIECE)) return NULL;
    return t->pieces.p + t->piece_off[id];
}

int sq_tok_id(const sq_tok *t, const char *piece) {
    if (!t || !piece) return -1;
    size_t n = strlen(piece);
    int id = sm_get(&t->added_map, piece, n);
    return id >= 0 ? id : sm_get(&t->vocab, piece, n);
}

int sq_tok_bos(const sq_tok *t) { return t ? t->bos : -1; }
const char *sq_tok_bos_rule(const sq_tok *t) { return t ? t->bos_rule : ""; }
