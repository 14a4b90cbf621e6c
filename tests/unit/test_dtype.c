/* test_dtype.c: dtype names and sizes, and every conversion against tables written by independent
 * implementations (tests/fixtures/gen_dtype.py: numpy, ml_dtypes; E4M3 also over 4 million random
 * floats, held as checksums) and against a slow reference. */
#include "../../base/base.h"
#include "../../formats/dtype.h"
#include "check.h"

#include <math.h>
#include <string.h>

#define FIXTURES "tests/fixtures/dtype/"
#define MAX_SHOWN 5 /* mismatches printed per table */

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t rd32(const char *p) {
    uint32_t u;
    memcpy(&u, p, 4); /* the tables are little-endian, as is every host spotq builds for */
    return u;
}

/* Loads a table of u32s; *n is their count. NULL (and one failed CHECK) if it cannot. */
static char *load(const char *name, size_t *n) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "%s", name);
    char *buf = NULL;
    size_t len = 0;
    sq_err err = {0};
    sq_status s = sq_read_file(path, &buf, &len, &err);
    CHECK(s == SQ_OK && len % 4 == 0, "%s (run python3 tests/fixtures/gen_dtype.py)",
          s == SQ_OK ? path : err.msg);
    if (s != SQ_OK || len % 4 != 0) {
        free(buf);
        return NULL;
    }
    *n = len / 4;
    return buf;
}

/* ---- properties of a narrow code or an f32 ---- */

static int f32_is_nan(uint32_t u) { return (u & 0x7FFFFFFFu) > 0x7F800000u; }
static int f16_is_nan(uint32_t h) { return (h & 0x7FFFu) > 0x7C00u; }
static int bf16_is_nan(uint32_t h) { return (h & 0x7FFFu) > 0x7F80u; }
static int e4m3_is_nan(uint32_t b) { return (b & 0x7Fu) == 0x7Fu; }
static int e5m2_is_nan(uint32_t b) { return (b & 0x7Fu) > 0x7Cu; }

/* The quiet NaNs dtype.h's converters promise: the sign kept, the quiet bit set, and as much
 * payload as fits (x86's F16C conversions do the same). */
static uint32_t expect_nan_from_f16(uint32_t h) {
    return (h & 0x8000u) << 16 | 0x7FC00000u | (h & 0x3FFu) << 13;
}
static uint32_t expect_nan_from_bf16(uint32_t h) { return h << 16 | 0x00400000u; }
static uint32_t expect_nan_from_e4m3(uint32_t b) { return (b & 0x80u) << 24 | 0x7FC00000u; }
static uint32_t expect_nan_from_e5m2(uint32_t b) { return expect_nan_from_f16(b << 8); }
static uint32_t expect_f16_nan(uint32_t x) {
    return (x >> 16 & 0x8000u) | 0x7E00u | (x >> 13 & 0x1FFu);
}
static uint32_t expect_bf16_nan(uint32_t x) { return x >> 16 | 0x0040u; }

/* ---- names, sizes ---- */

static void test_names(void) {
    static const struct {
        sq_dtype t;
        const char *name;
        int size, is_float;
    } want[] = {
        {SQ_DT_F64, "F64", 8, 0},   {SQ_DT_F32, "F32", 4, 1},         {SQ_DT_F16, "F16", 2, 1},
        {SQ_DT_BF16, "BF16", 2, 1}, {SQ_DT_F8_E4M3, "F8_E4M3", 1, 1}, {SQ_DT_F8_E5M2, "F8_E5M2", 1, 0},
        {SQ_DT_I64, "I64", 8, 0},   {SQ_DT_I32, "I32", 4, 0},         {SQ_DT_I16, "I16", 2, 0},
        {SQ_DT_I8, "I8", 1, 0},     {SQ_DT_U8, "U8", 1, 0},           {SQ_DT_BOOL, "BOOL", 1, 0},
    };
    CHECK(sizeof want / sizeof want[0] == SQ_DT_COUNT, "every dtype listed");
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        sq_dtype t = want[i].t;
        CHECK(strcmp(sq_dtype_name(t), want[i].name) == 0, "%d: %s", (int)t, sq_dtype_name(t));
        CHECK(sq_dtype_from_name(want[i].name) == (int)t, "%s", want[i].name);
        CHECK(sq_dtype_size(t) == want[i].size, "%s: %d", want[i].name, sq_dtype_size(t));
        CHECK(sq_dtype_is_float(t) == want[i].is_float, "%s", want[i].name);
    }
    const char *bad[] = {"", "f32", "F8_E4M3FN", "FLOAT", "F32 ", "BF", "F8"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(sq_dtype_from_name(bad[i]) == -1, "'%s'", bad[i]);
    CHECK(sq_dtype_from_name(NULL) == -1, "NULL");
    CHECK(strcmp(sq_dtype_name(SQ_DT_COUNT), "?") == 0, "out of range");
    CHECK(strcmp(sq_dtype_name((sq_dtype)-1), "?") == 0, "negative");
    CHECK(sq_dtype_size(SQ_DT_COUNT) == 0 && sq_dtype_is_float(SQ_DT_COUNT) == 0, "out of range");
}

/* ---- narrow -> f32, over every pattern ---- */

typedef float (*widen_fn)(uint32_t code);
static float widen_f16(uint32_t c) { return sq_f16_to_f32((uint16_t)c); }
static float widen_bf16(uint32_t c) { return sq_bf16_to_f32((uint16_t)c); }
static float widen_e4m3(uint32_t c) { return sq_e4m3_to_f32((uint8_t)c); }

/* Every pattern of one type through the bulk converter (from an odd address, so unaligned) and, if
 * there is one, the scalar converter; each checked against the reference table. */
static void test_decode(const char *file, sq_dtype t, widen_fn scalar, int (*is_nan)(uint32_t),
                        uint32_t (*expect_nan)(uint32_t)) {
    size_t n = 0;
    char *tab = load(file, &n);
    if (!tab) return;
    int width = sq_dtype_size(t);
    CHECK(n == (size_t)1 << (8 * width), "%s: %zu entries", file, n);
    unsigned char *src = malloc(n * (size_t)width + 1);
    float *bulk = malloc(n * sizeof(float));
    for (size_t c = 0; c < n; c++) memcpy(src + 1 + c * (size_t)width, &c, (size_t)width);
    sq_dtype_to_f32(t, src + 1, bulk, n);

    size_t bad = 0, bad_bulk = 0;
    for (uint32_t c = 0; c < n; c++) {
        uint32_t want = rd32(tab + 4 * c);
        uint32_t got_bulk = f32_bits(bulk[c]);
        uint32_t got = scalar ? f32_bits(scalar(c)) : got_bulk;
        int ok;
        if (is_nan(c)) /* the reference's payload is its own business: NaN-ness and sign */
            ok = f32_is_nan(want) && got == expect_nan(c) && (want >> 31) == (c >> (8 * width - 1));
        else
            ok = got == want;
        if (!ok && bad++ < MAX_SHOWN)
            fprintf(stderr, "  %s: 0x%0*x -> 0x%08x, want 0x%08x\n", file, 2 * width, c, got, want);
        if (got_bulk != got && bad_bulk++ < MAX_SHOWN)
            fprintf(stderr, "  %s bulk: 0x%0*x -> 0x%08x, scalar 0x%08x\n", file, 2 * width, c,
                    got_bulk, got);
    }
    CHECK(bad == 0, "%s: %zu of %zu patterns decode wrong", file, bad, n);
    CHECK(bad_bulk == 0, "%s: the bulk converter differs from the scalar one %zu times", file,
          bad_bulk);
    free(bulk);
    free(src);
    free(tab);
}

/* ---- f32 -> narrow, over boundary cases and random floats ---- */

typedef uint32_t (*narrow_fn)(float f);
static uint32_t narrow_f16(float f) { return sq_f32_to_f16(f); }
static uint32_t narrow_bf16(float f) { return sq_f32_to_bf16(f); }
static uint32_t narrow_e4m3(float f) { return sq_f32_to_e4m3(f); }

/* is_nan / expect_nan are NULL for E4M3, whose NaN code the table gives exactly (0x7F|sign). */
static void test_encode(const char *file, sq_dtype t, narrow_fn scalar, int (*is_nan)(uint32_t),
                        uint32_t (*expect_nan)(uint32_t)) {
    size_t n = 0;
    char *tab = load(file, &n);
    if (!tab) return;
    n /= 2; /* records {f32 bits, expected code} */
    CHECK(n > 100000, "%s: only %zu records", file, n);
    int width = sq_dtype_size(t);
    float *in = malloc(n * sizeof(float));
    unsigned char *bulk = malloc(n * (size_t)width + 1);
    for (size_t i = 0; i < n; i++) in[i] = bits_f32(rd32(tab + 8 * i));
    sq_dtype_from_f32(t, in, bulk + 1, n);

    size_t bad = 0, bad_bulk = 0, nans = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = rd32(tab + 8 * i), want = rd32(tab + 8 * i + 4);
        uint32_t got = scalar(in[i]), got_bulk = 0;
        memcpy(&got_bulk, bulk + 1 + i * (size_t)width, (size_t)width);
        int ok;
        if (f32_is_nan(x) && is_nan) {
            uint32_t sign = 1u << (8 * width - 1);
            ok = is_nan(want) && got == expect_nan(x) && !(want & sign) == !(x >> 31);
            nans++;
        } else {
            ok = got == want;
        }
        if (!ok && bad++ < MAX_SHOWN)
            fprintf(stderr, "  %s: 0x%08x (%.9g) -> 0x%x, want 0x%x\n", file, x, (double)in[i],
                    got, want);
        if (got_bulk != got && bad_bulk++ < MAX_SHOWN)
            fprintf(stderr, "  %s bulk: 0x%08x -> 0x%x, scalar 0x%x\n", file, x, got_bulk, got);
    }
    CHECK(bad == 0, "%s: %zu of %zu floats encode wrong", file, bad, n);
    CHECK(bad_bulk == 0, "%s: the bulk converter differs from the scalar one %zu times", file,
          bad_bulk);
    CHECK(!is_nan || nans >= 10, "%s: only %zu NaN inputs", file, nans);
    free(bulk);
    free(in);
    free(tab);
}

/* ---- E4M3 over 4 million more random floats, against ml_dtypes' codes kept as block checksums ---- */

static uint64_t mix64(uint64_t z) { /* the splitmix64 finaliser, as gen_dtype.py's */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void test_random_e4m3(void) {
    size_t n = 0;
    char *tab = load("enc_e4m3_random.bin", &n);
    if (!tab) return;
    uint64_t seed;
    memcpy(&seed, tab, 8);
    uint32_t count = rd32(tab + 8), block = rd32(tab + 12);
    CHECK(block > 0 && count % block == 0 && n == 4 + 2 * (size_t)(count / block) && count >= 4000000u, "enc_e4m3_random.bin: header");
    if (!(block > 0 && count % block == 0 && n == 4 + 2 * (size_t)(count / block))) { free(tab); return; }
    size_t bad_blocks = 0, bad_bulk = 0;
    float *x = malloc((size_t)block * sizeof *x);
    uint8_t *bulk = malloc(block);
    for (uint32_t b = 0; b < count / block; b++) {
        uint64_t sum = 0, want;
        memcpy(&want, tab + 16 + 8 * (size_t)b, 8);
        for (uint32_t j = 0; j < block; j++) {
            uint64_t i = (uint64_t)b * block + j, z = mix64(seed + (i + 1) * 0x9E3779B97F4A7C15ULL);
            uint32_t lo = (uint32_t)z, e = (uint32_t)((z >> 40) % 24 + 114);
            x[j] = bits_f32(((z >> 32) & 7) == 0 ? lo : (lo & 0x807FFFFFu) | e << 23);
            sum += (uint64_t)sq_f32_to_e4m3(x[j]) * (mix64(i) | 1);
        }
        sq_dtype_from_f32(SQ_DT_F8_E4M3, x, bulk, block);
        for (uint32_t j = 0; j < block; j++) bad_bulk += bulk[j] != sq_f32_to_e4m3(x[j]);
        if (sum != want && bad_blocks++ < MAX_SHOWN)
            fprintf(stderr, "  enc_e4m3_random.bin: block %u (floats %llu..) differs from ml_dtypes\n", b, (unsigned long long)b * block);
    }
    CHECK(bad_blocks == 0, "E4M3: %zu of %u blocks of random floats encode differently from ml_dtypes", bad_blocks, count / block);
    CHECK(bad_bulk == 0, "E4M3: the bulk converter differs from the scalar one on %zu random floats", bad_bulk);
    free(x);
    free(bulk);
    free(tab);
}

/* ---- a slow reference in double arithmetic, over a sweep of all f32 patterns ----
 * rint() rounds half to even in the default rounding mode. min_exp: the exponent of the smallest
 * normal; mbits: stored mantissa bits; max: the largest finite value; over: the code a positive
 * overflow gives (Inf, or max for E4M3, which saturates). Returns the code without its sign. */
static uint32_t ref_code(float f, int min_exp, int mbits, double max, uint32_t max_code,
                         uint32_t over) {
    double a = fabs((double)f);
    double half_ulp_of_max = ldexp(1.0, ilogb(max) - mbits - 1);
    if (a > max + half_ulp_of_max) return over;
    if (a == max + half_ulp_of_max) return (max_code & 1) ? over : max_code; /* tie: even code */
    if (a < ldexp(1.0, min_exp)) /* subnormal: a count of the smallest steps (2^mbits: normal) */
        return (uint32_t)rint(ldexp(a, mbits - min_exp));
    int e = ilogb(a);
    uint32_t q = (uint32_t)rint(ldexp(a, mbits - e)); /* 2^mbits .. 2^(mbits+1): a carry is fine */
    return ((uint32_t)(e - min_exp + 1) << mbits) + q - (1u << mbits);
}

static void test_sweep(void) {
    const uint32_t stride = 4093; /* prime: the low bits vary too; about a million floats */
    size_t bad[3] = {0, 0, 0}, count = 0;
    const char *names[3] = {"F16", "BF16", "F8_E4M3"};
    for (uint64_t u = 0; u <= 0xFFFFFFFFu; u += stride) {
        float f = bits_f32((uint32_t)u);
        if (isnan(f)) continue;
        uint32_t sign = (uint32_t)(u >> 31);
        uint32_t want[3] = {
            sign << 15 | ref_code(f, -14, 10, 65504.0, 0x7BFF, 0x7C00),
            sign << 15 | ref_code(f, -126, 7, ldexp(255.0, 120), 0x7F7F, 0x7F80),
            sign << 7 | ref_code(f, -6, 3, 448.0, 0x7E, 0x7E),
        };
        uint32_t got[3] = {sq_f32_to_f16(f), sq_f32_to_bf16(f), sq_f32_to_e4m3(f)};
        for (int k = 0; k < 3; k++)
            if (got[k] != want[k] && bad[k]++ < MAX_SHOWN)
                fprintf(stderr, "  sweep %s: 0x%08x (%.9g) -> 0x%x, want 0x%x\n", names[k],
                        (uint32_t)u, (double)f, got[k], want[k]);
        count++;
    }
    for (int k = 0; k < 3; k++)
        CHECK(bad[k] == 0, "sweep %s: %zu of %zu floats differ from the double reference",
              names[k], bad[k], count);
}

/* ---- round trips, special values, the other dtypes ---- */

static void test_round_trips(void) {
    size_t bad16 = 0, badbf = 0, bad8 = 0;
    for (uint32_t c = 0; c < 0x10000; c++) {
        if (!f16_is_nan(c) && sq_f32_to_f16(sq_f16_to_f32((uint16_t)c)) != c) bad16++;
        if (!bf16_is_nan(c) && sq_f32_to_bf16(sq_bf16_to_f32((uint16_t)c)) != c) badbf++;
        if (c < 0x100 && !e4m3_is_nan(c) && sq_f32_to_e4m3(sq_e4m3_to_f32((uint8_t)c)) != c) bad8++;
    }
    CHECK(bad16 == 0 && badbf == 0 && bad8 == 0, "round trips: F16 %zu, BF16 %zu, E4M3 %zu wrong",
          bad16, badbf, bad8);
}

static void test_specials(void) {
    /* The cases the header spells out, by hand. */
    CHECK(sq_f32_to_f16(65519.996f) == 0x7BFF && sq_f32_to_f16(65520.0f) == 0x7C00, "F16 overflow");
    CHECK(sq_f32_to_f16(-INFINITY) == 0xFC00 && sq_f32_to_f16(-0.0f) == 0x8000, "F16 -Inf, -0");
    CHECK(sq_f32_to_f16(0x1p-25f) == 0 && sq_f32_to_f16(0x1.000002p-25f) == 1, "F16 tiny");
    CHECK(sq_f16_to_f32(0x0001) == 0x1p-24f && sq_f16_to_f32(0x03FF) == 0x3FFp-24f, "F16 subnormals");
    CHECK(sq_f32_to_bf16(0x1.FFp127f) == 0x7F80 && sq_f32_to_bf16(INFINITY) == 0x7F80, "BF16 overflow");
    CHECK(sq_f32_to_bf16(bits_f32(0xFF800001u)) == 0xFFC0, "BF16 sNaN: quiet, sign kept");
    CHECK(sq_f32_to_e4m3(448.0f) == 0x7E && sq_f32_to_e4m3(464.0f) == 0x7E, "E4M3 max");
    CHECK(sq_f32_to_e4m3(1e30f) == 0x7E && sq_f32_to_e4m3(-INFINITY) == 0xFE, "E4M3 saturates");
    CHECK(sq_f32_to_e4m3(NAN) == 0x7F && sq_f32_to_e4m3(-NAN) == 0xFF, "E4M3 NaN keeps sign");
    CHECK(sq_f32_to_e4m3(-0.0f) == 0x80 && sq_f32_to_e4m3(0x1p-10f) == 0, "E4M3 -0, tie to 0");
    CHECK(sq_f32_to_e4m3(0x1.8p-9f) == 0x02 && sq_f32_to_e4m3(0x1.8p-8f) == 0x03, "E4M3 subnormal ties");
    CHECK(sq_e4m3_to_f32(0x01) == 0x1p-9f && sq_e4m3_to_f32(0x08) == 0x1p-6f, "E4M3 subnormals");
    CHECK(isnan(sq_e4m3_to_f32(0xFF)) && signbit(sq_e4m3_to_f32(0xFF)), "E4M3 -NaN");
}

static void test_bulk_other_types(void) {
    float out[8];
    const int8_t i8[3] = {-128, 127, 0};
    sq_dtype_to_f32(SQ_DT_I8, i8, out, 3);
    CHECK(out[0] == -128.0f && out[1] == 127.0f && out[2] == 0.0f, "I8");
    const uint8_t u8[2] = {255, 1};
    sq_dtype_to_f32(SQ_DT_U8, u8, out, 2);
    CHECK(out[0] == 255.0f && out[1] == 1.0f, "U8");
    const int16_t i16[2] = {-32768, 12345};
    sq_dtype_to_f32(SQ_DT_I16, i16, out, 2);
    CHECK(out[0] == -32768.0f && out[1] == 12345.0f, "I16");
    const int32_t i32[2] = {16777217, -7};
    sq_dtype_to_f32(SQ_DT_I32, i32, out, 2);
    CHECK(out[0] == 16777216.0f && out[1] == -7.0f, "I32");
    const int64_t i64[2] = {INT64_MIN, 3};
    sq_dtype_to_f32(SQ_DT_I64, i64, out, 2);
    CHECK(out[0] == -0x1p63f && out[1] == 3.0f, "I64");
    const uint8_t b[3] = {0, 1, 2};
    sq_dtype_to_f32(SQ_DT_BOOL, b, out, 3);
    CHECK(out[0] == 0.0f && out[1] == 1.0f && out[2] == 1.0f, "BOOL");
    const double d[4] = {0.1, 1e300, -1e-300, 1.0 + 0x1p-24}; /* the last is a tie: to even */
    sq_dtype_to_f32(SQ_DT_F64, d, out, 4);
    CHECK(out[0] == 0.1f && out[1] == INFINITY && out[2] == -0.0f && signbit(out[2]) &&
              out[3] == 1.0f, "F64 -> F32");
    const float f[3] = {0.1f, -INFINITY, 0x1p-149f};
    double dd[3];
    sq_dtype_from_f32(SQ_DT_F64, f, dd, 3);
    CHECK(dd[0] == (double)0.1f && dd[1] == -INFINITY && dd[2] == 0x1p-149, "F32 -> F64");
    float ff[3];
    sq_dtype_from_f32(SQ_DT_F32, f, ff, 3);
    sq_dtype_to_f32(SQ_DT_F32, ff, out, 3);
    CHECK(memcmp(out, f, sizeof f) == 0, "F32 copies");
    sq_dtype_to_f32(SQ_DT_F16, NULL, NULL, 0);
    sq_dtype_from_f32(SQ_DT_F8_E4M3, NULL, NULL, 0); /* n = 0: nothing touched */
}

int main(void) {
    test_names();
    test_decode("dec_f16.bin", SQ_DT_F16, widen_f16, f16_is_nan, expect_nan_from_f16);
    test_decode("dec_bf16.bin", SQ_DT_BF16, widen_bf16, bf16_is_nan, expect_nan_from_bf16);
    test_decode("dec_e4m3.bin", SQ_DT_F8_E4M3, widen_e4m3, e4m3_is_nan, expect_nan_from_e4m3);
    test_decode("dec_e5m2.bin", SQ_DT_F8_E5M2, NULL, e5m2_is_nan, expect_nan_from_e5m2);
    test_encode("enc_f16.bin", SQ_DT_F16, narrow_f16, f16_is_nan, expect_f16_nan);
    test_encode("enc_bf16.bin", SQ_DT_BF16, narrow_bf16, bf16_is_nan, expect_bf16_nan);
    test_encode("enc_e4m3.bin", SQ_DT_F8_E4M3, narrow_e4m3, NULL, NULL);
    test_random_e4m3();
    test_sweep();
    test_round_trips();
    test_specials();
    test_bulk_other_types();
    return check_report("test_dtype");
}
