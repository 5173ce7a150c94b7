/* Huffman + run-length deflate encoder (deflate.h). RFC 1951 terms. */
#include "image/deflate.h"

#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_IN (64 * 1024) /* input bytes per block: adapts codes to local statistics */
#define NLITLEN 286
#define MAX_BITS 15
#define MAX_CL_BITS 7

static const uint16_t len_base[29] = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                      15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                      67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t len_extra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                      2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint8_t cl_order[19] = {16, 17, 18, 0, 8,  7, 9,  6, 10, 5,
                                     11, 4,  12, 3, 13, 2, 14, 1, 15};

static uint8_t len_code[259]; /* run length 3..258 -> index into len_base */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void tables_init(void)
{
    for (int c = 0; c < 29; c++) {
        int end = c == 28 ? 259 : len_base[c + 1];
        if (c == 27)
            end = 258; /* 258 has its own code */
        for (int l = len_base[c]; l < end; l++)
            len_code[l] = (uint8_t)c;
    }
}

/* ==== Bit writer ====
 * LSB first. Invariant between calls: n <= 7 pending bits. Every put stores 8
 * bytes and advances by the whole bytes written (branch-free), so out needs 8
 * bytes of slack; one put may add up to 56 bits. */

typedef struct {
    uint8_t *p;
    uint64_t bits;
    unsigned n;
} bw_t;

static inline void put(bw_t *w, uint32_t v, unsigned nb)
{
    w->bits |= (uint64_t)v << w->n;
    w->n += nb;
    memcpy(w->p, &w->bits, 8);
    w->p += w->n >> 3;
    w->bits >>= w->n & ~7u;
    w->n &= 7;
}

static void align_byte(bw_t *w)
{
    if (w->n)
        *w->p++ = (uint8_t)w->bits;
    w->bits = 0;
    w->n = 0;
}

/* ==== Huffman code construction ==== */

static int cmp_sym(const void *a, const void *b, void *f)
{
    const uint32_t *freq = f;
    int x = *(const int *)a, y = *(const int *)b;
    if (freq[x] != freq[y])
        return freq[x] < freq[y] ? -1 : 1;
    return x - y;
}

/* insertion sort: n <= 286 and called ~100 times per image */
static void sort_syms(int *s, int m, const uint32_t *freq)
{
    for (int i = 1; i < m; i++) {
        int v = s[i], j = i - 1;
        while (j >= 0 && cmp_sym(&s[j], &v, (void *)freq) > 0) {
            s[j + 1] = s[j];
            j--;
        }
        s[j + 1] = v;
    }
}

/* Length-limited Huffman code lengths: two-queue Huffman, then the Kraft
 * repair that moves leaves down (as miniz does) when a depth exceeds maxbits;
 * lengths are dealt out longest-first to the rarest symbols. A lone symbol
 * gets a partner so every code is complete. */
static void huff_lengths(const uint32_t *freq, int n, int maxbits, uint8_t *len)
{
    int syms[NLITLEN], m = 0;
    memset(len, 0, (size_t)n);
    for (int i = 0; i < n; i++)
        if (freq[i])
            syms[m++] = i;
    if (m == 0)
        return;
    if (m == 1) {
        len[syms[0]] = 1;
        len[syms[0] == 0 ? 1 : 0] = 1;
        return;
    }
    sort_syms(syms, m, freq);
    uint64_t w[2 * NLITLEN];
    int parent[2 * NLITLEN], depth[2 * NLITLEN];
    for (int k = 0; k < m; k++)
        w[k] = freq[syms[k]];
    int li = 0, ii = m, next = m;
    while (next < 2 * m - 1) {
        int pick[2];
        for (int t = 0; t < 2; t++) {
            if (li < m && (ii >= next || w[li] <= w[ii]))
                pick[t] = li++;
            else
                pick[t] = ii++;
        }
        w[next] = w[pick[0]] + w[pick[1]];
        parent[pick[0]] = parent[pick[1]] = next;
        next++;
    }
    depth[2 * m - 2] = 0;
    for (int k = 2 * m - 3; k >= 0; k--)
        depth[k] = depth[parent[k]] + 1;
    int blc[2 * NLITLEN + 1];
    memset(blc, 0, sizeof(blc));
    int maxd = 0;
    for (int k = 0; k < m; k++) {
        blc[depth[k]]++;
        if (depth[k] > maxd)
            maxd = depth[k];
    }
    if (maxd > maxbits) {
        for (int i = maxbits + 1; i <= maxd; i++) {
            blc[maxbits] += blc[i];
            blc[i] = 0;
        }
        uint32_t total = 0;
        for (int i = 1; i <= maxbits; i++)
            total += (uint32_t)blc[i] << (maxbits - i);
        while (total > (1u << maxbits)) {
            blc[maxbits]--;
            for (int i = maxbits - 1; i > 0; i--)
                if (blc[i]) {
                    blc[i]--;
                    blc[i + 1] += 2;
                    break;
                }
            total--;
        }
        maxd = maxbits;
    }
    int k = 0;
    for (int i = maxd; i >= 1; i--)
        for (int j = 0; j < blc[i]; j++)
            len[syms[k++]] = (uint8_t)i;
}

static uint32_t reverse_bits(uint32_t v, int n)
{
    uint32_t r = 0;
    for (int i = 0; i < n; i++, v >>= 1)
        r = (r << 1) | (v & 1);
    return r;
}

/* Canonical codes, bit-reversed for the LSB-first writer. */
static void huff_codes(const uint8_t *len, int n, uint16_t *code)
{
    int blc[MAX_BITS + 1] = {0};
    uint32_t next[MAX_BITS + 2];
    for (int i = 0; i < n; i++)
        blc[len[i]]++;
    blc[0] = 0;
    uint32_t c = 0;
    for (int b = 1; b <= MAX_BITS; b++) {
        c = (c + (uint32_t)blc[b - 1]) << 1;
        next[b] = c;
    }
    for (int i = 0; i < n; i++)
        code[i] = len[i] ? (uint16_t)reverse_bits(next[len[i]]++, len[i]) : 0;
}

/* ==== Blocks ==== */

size_t sc_deflate_bound(size_t len)
{
    /* <= 15 bits per input byte, a header per block, the flush, writer slack */
    return len * 2 + (len / BLOCK_IN + 2) * 400 + 64;
}

/* One dynamic block over data[bs, be) given its runs (distance-1 matches) in
 * order; everything outside a run is a literal. lfreq holds the symbol counts. */
static void write_block(bw_t *w, const uint8_t *data, size_t bs, size_t be, const uint32_t *rpos,
                        const uint16_t *rlen, size_t nruns, const uint32_t *lfreq, int final)
{
    uint8_t llen[NLITLEN], dlen[2] = {1, 1}, cllen[19];
    uint16_t lcode[NLITLEN], dcode[2] = {0, 1}, clcode[19];
    huff_lengths(lfreq, NLITLEN, MAX_BITS, llen);
    huff_codes(llen, NLITLEN, lcode);
    int hlit = NLITLEN;
    while (hlit > 257 && llen[hlit - 1] == 0)
        hlit--;

    /* run-length code the code lengths (litlen then dist, one sequence) */
    uint8_t seq[NLITLEN + 2], cls[NLITLEN + 2], clx[NLITLEN + 2];
    int ns = 0, nc = 0;
    memcpy(seq, llen, (size_t)hlit);
    seq[hlit] = dlen[0];
    seq[hlit + 1] = dlen[1];
    ns = hlit + 2;
    uint32_t clfreq[19] = {0};
    for (int i = 0; i < ns;) {
        int v = seq[i], run = 1;
        while (i + run < ns && seq[i + run] == v)
            run++;
        i += run;
        if (v == 0) {
            while (run >= 11) {
                int r = run > 138 ? 138 : run;
                cls[nc] = 18, clx[nc++] = (uint8_t)(r - 11);
                run -= r;
            }
            if (run >= 3) {
                cls[nc] = 17, clx[nc++] = (uint8_t)(run - 3);
                run = 0;
            }
        } else {
            cls[nc] = (uint8_t)v, clx[nc++] = 0;
            run--;
            while (run >= 3) {
                int r = run > 6 ? 6 : run;
                cls[nc] = 16, clx[nc++] = (uint8_t)(r - 3);
                run -= r;
            }
        }
        while (run-- > 0)
            cls[nc] = (uint8_t)v, clx[nc++] = 0;
    }
    for (int i = 0; i < nc; i++)
        clfreq[cls[i]]++;
    huff_lengths(clfreq, 19, MAX_CL_BITS, cllen);
    huff_codes(cllen, 19, clcode);
    int hclen = 19;
    while (hclen > 4 && cllen[cl_order[hclen - 1]] == 0)
        hclen--;

    put(w, final ? 1 : 0, 1);
    put(w, 2, 2);
    put(w, (uint32_t)(hlit - 257), 5);
    put(w, 2 - 1, 5);
    put(w, (uint32_t)(hclen - 4), 4);
    for (int i = 0; i < hclen; i++)
        put(w, cllen[cl_order[i]], 3);
    for (int i = 0; i < nc; i++) {
        put(w, clcode[cls[i]], cllen[cls[i]]);
        if (cls[i] == 16)
            put(w, clx[i], 2);
        else if (cls[i] == 17)
            put(w, clx[i], 3);
        else if (cls[i] == 18)
            put(w, clx[i], 7);
    }

    uint32_t tab[256]; /* literal code | length << 16 */
    for (int i = 0; i < 256; i++)
        tab[i] = lcode[i] | (uint32_t)llen[i] << 16;
    uint8_t *p = w->p;
    uint64_t bits = w->bits;
    unsigned n = w->n;
    size_t i = bs;
    for (size_t r = 0; r <= nruns; r++) {
        size_t lit_end = r < nruns ? rpos[r] : be;
        /* literals two at a time: <= 7 + 2 * 15 bits pending, one store */
        for (; i + 2 <= lit_end; i += 2) {
            uint32_t e0 = tab[data[i]], e1 = tab[data[i + 1]];
            bits |= (uint64_t)(e0 & 0xffff) << n;
            n += e0 >> 16;
            bits |= (uint64_t)(e1 & 0xffff) << n;
            n += e1 >> 16;
            memcpy(p, &bits, 8);
            p += n >> 3;
            bits >>= n & ~7u;
            n &= 7;
        }
        w->p = p, w->bits = bits, w->n = n;
        if (i < lit_end) {
            put(w, lcode[data[i]], llen[data[i]]);
            i++;
        }
        if (r < nruns) {
            unsigned l = rlen[r], c = len_code[l];
            put(w, lcode[257 + c], llen[257 + c]);
            if (len_extra[c])
                put(w, l - len_base[c], len_extra[c]);
            put(w, dcode[0], dlen[0]); /* distance 1 */
            i += l;
        }
        p = w->p, bits = w->bits, n = w->n;
    }
    put(w, lcode[256], llen[256]);
}

/* First k in [pos, end) (k >= 1) where data[k..k+2] all equal data[k-1], i.e.
 * where a run of at least 3 starts; end if none. */
static size_t next_run_scalar(const uint8_t *d, size_t pos, size_t end)
{
    if (pos == 0)
        pos = 1;
    for (size_t k = pos; k + 2 < end; k++)
        if (d[k] == d[k - 1] && d[k + 1] == d[k - 1] && d[k + 2] == d[k - 1])
            return k;
    return end;
}

static __attribute__((target("avx2"))) size_t next_run_avx2(const uint8_t *d, size_t pos,
                                                            size_t end)
{
    if (pos == 0)
        pos = 1;
    size_t k = pos;
    for (; k + 34 <= end; k += 32) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(d + k - 1));
        __m256i b = _mm256_loadu_si256((const __m256i *)(d + k));
        __m256i c = _mm256_loadu_si256((const __m256i *)(d + k + 1));
        __m256i e = _mm256_loadu_si256((const __m256i *)(d + k + 2));
        uint32_t m = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(a, b)) &
                     (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(b, c)) &
                     (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(c, e));
        if (m)
            return k + (size_t)__builtin_ctz(m);
    }
    return next_run_scalar(d, k, end);
}

size_t sc_deflate_segment_lvl(const uint8_t *data, size_t len, int final, uint8_t *out,
                              sc_simd_level_t lvl)
{
    pthread_once(&tables_once, tables_init);
    bw_t w = {out, 0, 0};
    /* a run takes >= 3 bytes, so a block has at most BLOCK_IN / 3 of them */
    uint32_t *rpos = malloc(sizeof(uint32_t) * (BLOCK_IN / 3 + 1));
    uint16_t *rlen = malloc(sizeof(uint16_t) * (BLOCK_IN / 3 + 1));
    if (!rpos || !rlen) {
        free(rpos);
        free(rlen);
        return 0;
    }
    int simd = lvl >= SC_SIMD_AVX2 && sc_simd_cpu_level() >= SC_SIMD_AVX2;
    size_t pos = 0;
    do {
        size_t bs = pos, end = len - pos > BLOCK_IN ? pos + BLOCK_IN : len, nr = 0;
        uint32_t lfreq[NLITLEN] = {0}, h2[256] = {0};
        /* literal counts: histogram of the block (two tables: fewer store
         * conflicts), minus the bytes the runs cover */
        size_t i = bs;
        for (; i + 2 <= end; i += 2) {
            lfreq[data[i]]++;
            h2[data[i + 1]]++;
        }
        if (i < end)
            lfreq[data[i]]++;
        for (int b = 0; b < 256; b++)
            lfreq[b] += h2[b];
        while (pos < end) {
            size_t k = simd ? next_run_avx2(data, pos, end) : next_run_scalar(data, pos, end);
            if (k >= end)
                break;
            uint8_t v = data[k - 1];
            size_t r = 3, lim = end - k < 258 ? end - k : 258;
            while (r < lim && data[k + r] == v)
                r++;
            rpos[nr] = (uint32_t)k;
            rlen[nr++] = (uint16_t)r;
            lfreq[v] -= (uint32_t)r;
            lfreq[257 + len_code[r]]++;
            pos = k + r;
        }
        pos = end;
        lfreq[256] = 1; /* end of block */
        write_block(&w, data, bs, end, rpos, rlen, nr, lfreq, final && pos >= len);
    } while (pos < len);
    if (!final) { /* sync flush: empty stored block, byte-aligned */
        put(&w, 0, 3);
        align_byte(&w);
        put(&w, 0x0000, 16);
        put(&w, 0xFFFF, 16);
    }
    align_byte(&w);
    free(rpos);
    free(rlen);
    return (size_t)(w.p - out);
}

size_t sc_deflate_segment(const uint8_t *data, size_t len, int final, uint8_t *out)
{
    return sc_deflate_segment_lvl(data, len, final, out, sc_simd_level());
}
