/* plan.c: the per-linear plan (plan.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

const int SQ_PLAN_GROUPS[SQ_PLAN_NGROUPS] = {128, 64, 32};

sq_lin sq_plan_fused_head(sq_lin w) {
    if (w == SQ_LIN_K || w == SQ_LIN_V) return SQ_LIN_Q;
    if (w == SQ_LIN_UP) return SQ_LIN_GATE;
    return w;
}

sq_status sq_plan_init(sq_plan *p, int n_layers, const sq_scheme *all, sq_err *err) {
    memset(p, 0, sizeof *p);
    if (n_layers < 0) return sq_fail(err, SQ_ERR_ARG, "plan of %d layers", n_layers);
    p->e = calloc((size_t)(n_layers ? n_layers : 1) * SQ_LIN_COUNT, sizeof *p->e);
    if (!p->e) return sq_fail(err, SQ_ERR_NOMEM, "out of memory for the quantisation plan");
    p->n_layers = n_layers;
    for (int i = 0; i < n_layers * SQ_LIN_COUNT; i++) p->e[i].s = *all;
    return SQ_OK;
}

void sq_plan_free(sq_plan *p) {
    free(p->e);
    memset(p, 0, sizeof *p);
}

const sq_plan_entry *sq_plan_at(const sq_plan *p, int l, sq_lin w) {
    if (!p || !p->e || l < 0 || l >= p->n_layers || (int)w < 0 || w >= SQ_LIN_COUNT) return NULL;
    return &p->e[l * SQ_LIN_COUNT + w];
}

void sq_plan_set(sq_plan *p, int l, sq_lin w, const sq_scheme *s) {
    if (l < 0 || l >= p->n_layers) return;
    sq_lin h = sq_plan_fused_head(w);
    for (int j = 0; j < SQ_LIN_COUNT; j++)
        if (sq_plan_fused_head((sq_lin)j) == h) {
            sq_plan_entry *e = &p->e[l * SQ_LIN_COUNT + j];
            e->keep = !s;
            if (s) e->s = *s;
        }
}

bool sq_scheme_same(const sq_scheme *a, const sq_scheme *b) {
    return a->kind == b->kind && a->bits == b->bits && a->group_size == b->group_size && a->sym == b->sym &&
           a->act_order == b->act_order && a->static_groups == b->static_groups && a->fp8_per_channel == b->fp8_per_channel &&
           a->fp8_block == b->fp8_block && a->act == b->act;
}

int sq_plan_distinct(const sq_plan *p, sq_scheme *out, int cap) {
    int n = 0;
    sq_scheme seen[64];
    for (int i = 0; i < p->n_layers * SQ_LIN_COUNT; i++) {
        if (p->e[i].keep) continue;
        int j = 0;
        while (j < n && j < 64 && !sq_scheme_same(&seen[j], &p->e[i].s)) j++;
        if (j < n) continue;
        if (n < 64) seen[n] = p->e[i].s;
        if (n < cap) out[n] = p->e[i].s;
        n++;
    }
    return n;
}

sq_status sq_plan_check(const sq_plan *p, sq_err *err) {
    for (int l = 0; l < p->n_layers; l++)
        for (int j = 0; j < SQ_LIN_COUNT; j++) {
            const sq_plan_entry *e = &p->e[l * SQ_LIN_COUNT + j], *h = &p->e[l * SQ_LIN_COUNT + sq_plan_fused_head((sq_lin)j)];
            if (e->keep != h->keep || (!e->keep && !sq_scheme_same(&e->s, &h->s)))
                return sq_fail(err, SQ_ERR_ARG, "quantisation plan: layer %d splits a set vLLM fuses (q/k/v or gate/up): they must share one scheme", l);
        }
    return SQ_OK;
}

/* Whether group g divides every member of the fused set of head h in layer l (k == 0: absent). */
static bool set_fits(const int64_t *k, int l, sq_lin h, int g) {
    for (int j = 0; j < SQ_LIN_COUNT; j++)
        if (sq_plan_fused_head((sq_lin)j) == h && k[l * SQ_LIN_COUNT + j] > 0 && (g > 0 && k[l * SQ_LIN_COUNT + j] % g)) return false;
    return true;
}

sq_status sq_plan_default(sq_plan *p, int n_layers, const int64_t *k, const sq_scheme *base, bool strict, sq_err *err) {
    sq_status s = sq_plan_init(p, n_layers, base, err);
    if (s || base->kind != SQ_SCHEME_INT || base->group_size <= 0) return s;
    int g0 = base->group_size;
    for (int l = 0; l < n_layers; l++)
        for (int j = 0; j < SQ_LIN_COUNT; j++) {
            if (sq_plan_fused_head((sq_lin)j) != (sq_lin)j || set_fits(k, l, (sq_lin)j, g0)) continue;
            if (strict) {
                char fits[96] = "";
                int n = 0;
                static const int cand[] = {-1, 32, 64, 128, 256};
                for (size_t c = 0; c < sizeof cand / sizeof *cand; c++) {
                    bool all = true;
                    for (int ll = 0; ll < n_layers && all; ll++)
                        for (int jj = 0; jj < SQ_LIN_COUNT && all; jj++) all = set_fits(k, ll, (sq_lin)jj, cand[c]);
                    if (all) n += snprintf(fits + n, sizeof fits - (size_t)n, "%s%d", n ? ", " : "", cand[c]);
                }
                sq_plan_free(p);
                return sq_fail(err, SQ_ERR_ARG, "--strict-group-size: --group-size %d does not divide in_features %lld of layer %d; "
                               "group sizes that fit every linear: %s", g0, (long long)k[l * SQ_LIN_COUNT + j], l, n ? fits : "none");
            }
            int gi = 0;
            while (gi < SQ_PLAN_NGROUPS && (SQ_PLAN_GROUPS[gi] >= g0 || SQ_PLAN_GROUPS[gi] % (32 / base->bits) ||
                                            !set_fits(k, l, (sq_lin)j, SQ_PLAN_GROUPS[gi])))
                gi++;
            int members = 0;
            for (int m = 0; m < SQ_LIN_COUNT; m++) members += sq_plan_fused_head((sq_lin)m) == (sq_lin)j && k[l * SQ_LIN_COUNT + m] > 0;
            if (gi == SQ_PLAN_NGROUPS) { /* no servable group divides it: kept, and the keep reason says why */
                sq_plan_set(p, l, (sq_lin)j, NULL);
                continue;
            }
            sq_scheme sc = *base;
            sc.group_size = SQ_PLAN_GROUPS[gi];
            sq_plan_set(p, l, (sq_lin)j, &sc);
            p->n_regrouped += members;
            p->regroup_to[gi] += members;
        }
    return SQ_OK;
}

void sq_plan_note(const sq_plan *p, int asked, char *buf, size_t cap) {
    buf[0] = 0;
    if (!p->n_regrouped) return;
    int n = snprintf(buf, cap, "group size %d does not divide in_features of %d linear%s:", asked, p->n_regrouped, p->n_regrouped == 1 ? "" : "s");
    for (int i = 0, first = 1; i < SQ_PLAN_NGROUPS && n > 0 && (size_t)n < cap; i++)
        if (p->regroup_to[i]) {
            n += snprintf(buf + n, cap - (size_t)n, "%s %d at g%d", first ? "" : ",", p->regroup_to[i], SQ_PLAN_GROUPS[i]);
            first = 0;
        }
}
