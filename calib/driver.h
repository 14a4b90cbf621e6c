/* driver.h: the calibration driver: the calibration text as seeded token windows run block by block
 * through a model, taps at each block's sites collecting, per (layer, site, FFN unit), the Hessian of
 * the input, its token count and max |x| (a live pass), or those statistics read from a `spotq calib`
 * file; the experts of an MoE site in groups whose Hessians fit a memory budget, rarely routed experts
 * calibrated on every token. `spotq calib` is sq_calib_model: every block's statistics into a file. */
#ifndef SQ_CALIB_DRIVER_H
#define SQ_CALIB_DRIVER_H

#include "../kernels/backend.h"
#include "hessian.h"
#include "../runtime/runtime.h"
#include "stats.h"

/* The true-sequential stages of a Llama block ([k, v, q], [o], [gate, up], [down]) and the site whose
 * input each needs; lin[0] gives the width of that input. */
typedef struct {
    sq_site site;
    int n;
    sq_lin lin[3];
} sq_calib_stage;
extern const sq_calib_stage sq_calib_stages[4];
#define SQ_CALIB_NSTAGES 4

typedef struct {
    const char *model;           /* the model's path, as given (names it in errors) */
    const char *calib;           /* .txt or .jsonl calibration text (NULL: none) */
    int nsamples, seqlen;        /* seqlen <= 0: 2048, or the model's maximum if smaller */
    uint64_t seed;
    const char *stats_in;        /* statistics from this file (spotq calib) instead of a live pass */
    int64_t max_hessian_bytes;   /* Hessians collected in one pass (0: SQ_CALIB_DEFAULT_HESSIAN_BYTES) */
    bool absmax;                 /* keep max |x| of every unit at the counted sites */
    const sq_backend_i *backend; /* the backend accumulating the Hessians of a pass (NULL: the CPU) */
} sq_calib_opts;

/* The calibration windows are cut into this many chunks (fewer with fewer windows), whatever the
 * number of ranks: each chunk's Hessians are accumulated apart and added in chunk order. */
#define SQ_CALIB_CHUNKS 8

/* The experts of an MoE site are calibrated in groups whose Hessians fit this (1 GiB). */
#define SQ_CALIB_DEFAULT_HESSIAN_BYTES (1ll << 30)

/* One calibration: the windows, the current block's inputs, the statistics of the stage at hand. */
typedef struct {
    sq_calib_opts o;             /* seqlen resolved */
    sq_model *m;
    const sq_config *c;
    sq_state *st;
    /* the data */
    int *ids;                    /* the calibration text's tokens */
    int64_t nids;
    int *win;                    /* (nsamples, seqlen) token windows */
    uint64_t hash;               /* FNV-1a 64 of the windows */
    int bos_id;                  /* the BOS documents start with (-1: none), by the tokenizer's rule... */
    char bos_rule[256];          /* ...which this names */
    sq_stats stats;              /* stats_in: read */
    float *x;                    /* (nsamples, seqlen, hidden) the current block's inputs; NULL without text */
    float *tmp;                  /* (seqlen, hidden) */
    /* the stage at hand */
    sq_site want;                /* the site the tap collects... */
    int units;                   /* ...of FFN units 0 .. units-1 (1 at attention sites and dense FFNs): their tokens
                                  * and max |x| when counting; the Hessians of units u0 .. u1-1 */
    int u0, u1;
    bool counting;
    int max_units;               /* the most FFN units of any layer (experts and shared expert) */
    sq_hessian *hs;              /* (max_units) the Hessian of each unit's input at want */
    sq_err hess_err;             /* the first failure of a Hessian accumulation in the tap (which returns no status) */
    int64_t *unit_tokens;        /* (max_units) tokens each unit saw there */
    float *act_absmax;           /* (max_units) max |x| there (o.absmax) */
    /* MoE bookkeeping */
    uint8_t *route_all;          /* (n_experts) experts of this block calibrated on every token */
    int64_t *moe_tokens;         /* (n_layers, n_experts) tokens routed to each expert */
    uint8_t *moe_all;            /* (n_layers, n_experts) the experts calibrated on every token */
    double t_forward, t_hessian;
    double f_forward;            /* operations of the forwards timed in t_forward (sq_state_flops over them) */
    double f_hessian;            /* operations of the Hessian updates (k (k + 1) per token of a k-wide input) */
    sq_hessian *part;            /* (max_units) the partial Hessians of the chunk at hand (run_collect), on the backend */
    uint64_t *need;              /* (max_units; NULL with one rank) the ranks (bit q) that accumulate each unit's
                                  * Hessian; 0: every rank. Set by the caller before a stage's statistics */
} sq_calib;

/* Tokenises o->calib with the model's tokenizer (its vocabulary checked), cuts the windows, embeds
 * them as block 0's inputs; with o->stats_in reads and checks the statistics. Neither: data-free (x
 * NULL, every count zero). */
sq_status sq_calib_begin(sq_calib *cal, sq_model *m, const sq_calib_opts *o, sq_err *err);
void sq_calib_end(sq_calib *cal);
/* MPI: whether rank q accumulates unit u's Hessian (cal->need). */
bool sq_calib_rank_needs(const sq_calib *cal, int q, int u);
/* A new block: no expert calibrated on every token yet. */
void sq_calib_block_begin(sq_calib *cal);
/* How many units' Hessians one pass of stage si collects: as many as the budget holds (at least one). */
int sq_calib_unit_group(const sq_calib *cal, int l, int si, int units);
/* The Hessians of units u0 .. u1-1 of stage si of layer l (of its `units`), from a pass (on the first
 * group also every unit's counts, and at an MoE layer's first FFN site the rarely routed experts, with
 * the pass taken again if any is) or from the statistics file. */
sq_status sq_calib_stage_stats(sq_calib *cal, int l, int si, int units, int u0, int u1, sq_err *err);
void sq_calib_free_hessians(sq_calib *cal);
/* MoE, at the first FFN site: records the tokens routed to each expert from unit_tokens; an expert
 * routed fewer tokens than its input width is calibrated on every token for the rest of the block.
 * Returns true when one is. */
bool sq_calib_route_rare_experts(sq_calib *cal, int l);
/* Runs layer l on every window in place, tap (may be NULL) seeing each site: the block's outputs
 * become the next block's inputs. MPI: without a tap each rank runs its own windows and every rank
 * then holds all the outputs; with one, every rank runs every window (its tap sees them all). */
sq_status sq_calib_forward(sq_calib *cal, int l, sq_tap_fn tap, void *user, sq_err *err);

/* Per input channel max |x| at the q/k/v (SQ_SITE_QKV) and gate/up (SQ_SITE_GATEUP; a mixture's whole
 * input) sites of layer l over every calibration window, the block as the model holds it now; the
 * windows are left as they are. MPI: window w on rank w mod N, then the max over ranks (exact), so
 * every rank holds the same figures. A NaN or Inf input is an error. No text: all zero. */
sq_status sq_calib_channel_absmax(sq_calib *cal, int l, float *qkv /* OUT (hidden) */, float *gateup /* OUT (hidden) */, sq_err *err);

/* `spotq calib`: opens model, calibrates every block of the full-precision model (every site of every
 * unit) and writes the statistics to out (force: replacing it). progress (may be NULL) after each block. */
typedef void (*sq_calib_progress_fn)(void *user, const char *what, int done, int total, double seconds);
sq_status sq_calib_model(const char *model, const char *out, bool force, const sq_calib_opts *o, int threads,
                         sq_calib_progress_fn progress, void *progress_user, sq_err *err);
/* The same statistics of the already opened m into st (zeroed first; sq_stats_free it), nothing written. */
sq_status sq_calib_collect(sq_model *m, const sq_calib_opts *o, sq_stats *st /* OUT */, sq_calib_progress_fn progress, void *progress_user,
                           sq_err *err);

#endif
