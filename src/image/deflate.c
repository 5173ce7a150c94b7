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

static const uint16_t dist_base[30] = {
    1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
    193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t dist_extra[30] = {0, 0, 0, 0, 1, 1, 2, 2,  3,  3,  4,  4,  5,  5,  6,
                                       6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13};

static uint8_t dist_code_lo[256]; /* distance 1..256 -> code, by d - 1 */
static uint8_t dist_code_hi[256]; /* distance 257..32768 -> code, by (d - 1) >> 7 */

static void dist_tables_init(void)
{
    for (int c = 0; c < 30; c++) {
        int end = c == 29 ? 32769 : dist_base[c + 1];
        for (int d = dist_base[c]; d < end; d++) {
            if (d <= 256)
                dist_code_lo[d - 1] = (uint8_t)c;
            else
                dist_code_hi[(d - 1) >> 7] = (uint8_t)c;
        }
    }
}

static inline unsigned dist_code(unsigned d)
{
    return d <= 256 ? dist_code_lo[d - 1] : dist_code_hi[(d - 1) >> 7];
}

/* One LZ77 symbol: a literal (len 0, lit) or a match (len 3..258, dist). */
typedef struct {
    uint16_t len; /* 0: literal */
    uint16_t dist_or_lit;
} sym_t;

/* Writes a Huffman code-length table (the block header after BTYPE). */
static void write_header(bw_t *w, const uint8_t *llen, int hlit, const uint8_t *dlen, int hdist)
{
    uint8_t seq[NLITLEN + 30], cls[NLITLEN + 30], clx[NLITLEN + 30], cllen[19];
    uint16_t clcode[19];
    int ns = 0, nc = 0;
    memcpy(seq, llen, (size_t)hlit);
    memcpy(seq + hlit, dlen, (size_t)hdist);
    ns = hlit + hdist;
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
    put(w, (uint32_t)(hlit - 257), 5);
    put(w, (uint32_t)(hdist - 1), 5);
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
}

/* One dynamic block of the given symbols; lfreq/dfreq hold their counts. */
static void write_block(bw_t *w, const sym_t *syms, size_t nsyms, uint32_t *lfreq, uint32_t *dfreq,
                        int final)
{
    uint8_t llen[NLITLEN], dlen[30];
    uint16_t lcode[NLITLEN], dcode[30];
    lfreq[256] = 1; /* end of block */
    huff_lengths(lfreq, NLITLEN, MAX_BITS, llen);
    huff_codes(llen, NLITLEN, lcode);
    int nd = 0;
    for (int i = 0; i < 30; i++)
        nd += dfreq[i] != 0;
    if (nd < 2) { /* a complete distance code needs two symbols (RFC 1951 allows one; some
                     decoders disagree) */
        dfreq[0] += dfreq[0] == 0;
        dfreq[1] += dfreq[1] == 0;
    }
    huff_lengths(dfreq, 30, MAX_BITS, dlen);
    huff_codes(dlen, 30, dcode);
    int hlit = NLITLEN, hdist = 30;
    while (hlit > 257 && llen[hlit - 1] == 0)
        hlit--;
    while (hdist > 1 && dlen[hdist - 1] == 0)
        hdist--;
    put(w, final ? 1 : 0, 1);
    put(w, 2, 2);
    write_header(w, llen, hlit, dlen, hdist);

    uint32_t tab[256]; /* literal code | length << 16 */
    for (int i = 0; i < 256; i++)
        tab[i] = lcode[i] | (uint32_t)llen[i] << 16;
    uint8_t *p = w->p;
    uint64_t bits = w->bits;
    unsigned n = w->n;
    for (size_t k = 0; k < nsyms; k++) {
        const sym_t s = syms[k];
        if (s.len == 0) {
            uint32_t e = tab[s.dist_or_lit];
            bits |= (uint64_t)(e & 0xffff) << n;
            n += e >> 16;
        } else {
            /* <= 7 + 15 + 5 + 15 + 13 = 55 bits pending: one store */
            unsigned c = len_code[s.len], d = s.dist_or_lit, dc = dist_code(d);
            bits |= (uint64_t)lcode[257 + c] << n;
            n += llen[257 + c];
            bits |= (uint64_t)(s.len - len_base[c]) << n;
            n += len_extra[c];
            bits |= (uint64_t)dcode[dc] << n;
            n += dlen[dc];
            bits |= (uint64_t)(d - dist_base[dc]) << n;
            n += dist_extra[dc];
        }
        memcpy(p, &bits, 8);
        p += n >> 3;
        bits >>= n & ~7u;
        n &= 7;
    }
    w->p = p, w->bits = bits, w->n = n;
    put(w, lcode[256], llen[256]);
}

/* ==== Match finding ====
 * zlib's scheme at about its level 5: hash chains over 4-byte prefixes
 * (at most MAX_CHAIN candidates, stop at NICE_MATCH), greedy with one step of
 * lazy evaluation, every position of a match inserted. Short matches far back
 * are refused (they cost more bits than their literals). After a long stretch
 * without any match the search steps over bytes (as LZ4 does), so sensor noise,
 * where matches are rare anyway, costs little more than the run-length coder
 * this replaced; the step resets at the next match. */

#define HASH_BITS 15
#define WINDOW 32768
#define MAX_MATCH 258
#define NICE_MATCH 64
#define MAX_CHAIN 16
#define SKIP_SHIFT 6 /* step + 1 every 64 misses */
/* A block whose run-length coding takes >= 4.1 bits per byte is sensor noise:
 * on the bench frames LZ gained nothing there (and 5-11 % below 4 bits/byte,
 * on JPEG-decoded photos), so it is not tried. */
#define NOISE_BITS_X10 41
/* Below 2 bits per byte (smooth) the chain is searched MAX_CHAIN deep: that is
 * where LZ gains most and long matches make it quick; textured blocks get
 * SHORT_CHAIN (the JPEG-decoded 1080p scene: 1.031x Pillow instead of 1.013x, in
 * 60 % of the time). */
#define SMOOTH_BITS_X10 20
#define SHORT_CHAIN 4

static inline uint32_t hash4(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return (v * 0x9E3779B1u) >> (32 - HASH_BITS);
}

static inline size_t match_len_scalar(const uint8_t *a, const uint8_t *b, size_t max)
{
    size_t l = 0;
    while (l < max && a[l] == b[l])
        l++;
    return l;
}

static inline size_t match_len_wide(const uint8_t *a, const uint8_t *b, size_t max)
{
    size_t l = 0;
    while (l + 8 <= max) {
        uint64_t x, y;
        memcpy(&x, a + l, 8);
        memcpy(&y, b + l, 8);
        if (x != y)
            return l + ((size_t)__builtin_ctzll(x ^ y) >> 3);
        l += 8;
    }
    while (l < max && a[l] == b[l])
        l++;
    return l;
}

typedef struct {
    uint32_t *head; /* per hash: newest position + 1 (0: none) */
    uint32_t *prev; /* per position mod WINDOW: the previous one with its hash, + 1 */
    int wide;
} mf_t;

static inline void mf_insert(mf_t *m, const uint8_t *d, size_t i)
{
    uint32_t h = hash4(d + i);
    m->prev[i & (WINDOW - 1)] = m->head[h];
    m->head[h] = (uint32_t)i + 1;
}

/* Best match at i (max bytes available) along the hash chain, at most
 * MAX_CHAIN candidates; inserts i. Returns its length (0 or >= 4) and the
 * distance in *dist. */
static inline size_t mf_find(mf_t *m, const uint8_t *d, size_t i, size_t max, unsigned *dist,
                             int max_chain)
{
    uint32_t h = hash4(d + i);
    uint32_t cand = m->head[h];
    m->prev[i & (WINDOW - 1)] = cand;
    m->head[h] = (uint32_t)i + 1;
    size_t best = 0;
    for (int k = 0; k < max_chain && cand; k++) {
        size_t j = cand - 1;
        if (i - j > WINDOW || best >= max)
            break;
        cand = m->prev[j & (WINDOW - 1)];
        if (d[j + best] != d[i + best])
            continue;
        size_t l =
            m->wide ? match_len_wide(d + j, d + i, max) : match_len_scalar(d + j, d + i, max);
        if (l > best) {
            best = l;
            *dist = (unsigned)(i - j);
            if (l >= NICE_MATCH)
                break;
        }
    }
    /* a short match far back costs more bits than its literals (zlib's TOO_FAR) */
    if (best < 4 || (best == 4 && *dist > 256) || (best == 5 && *dist > 4096))
        return 0;
    return best;
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

/* The run-length alternative for one block (distance-1 matches of >= 3 only),
 * into syms; fills the counts. On noise-like data (a JPEG-decoded photo) its
 * literal statistics beat short LZ matches, so each block keeps the cheaper. */
/* Runs of one block: positions and lengths (distance 1), the counts filled
 * (the literal counts from a histogram of the block minus the bytes the runs
 * cover: cheaper than counting symbol by symbol). */
typedef struct {
    uint32_t *pos;
    uint16_t *len;
    size_t n;
} runs_t;

static void rle_block(const uint8_t *data, size_t bs, size_t end, int simd, runs_t *r,
                      uint32_t *lfreq, uint32_t *dfreq)
{
    uint32_t h2[256] = {0};
    size_t i = bs;
    for (; i + 2 <= end; i += 2) {
        lfreq[data[i]]++;
        h2[data[i + 1]]++;
    }
    if (i < end)
        lfreq[data[i]]++;
    for (int b = 0; b < 256; b++)
        lfreq[b] += h2[b];
    r->n = 0;
    size_t pos = bs;
    while (pos < end) {
        size_t k = simd ? next_run_avx2(data, pos, end) : next_run_scalar(data, pos, end);
        if (k >= end)
            break;
        uint8_t v = data[k - 1];
        size_t l = 3, lim = end - k < MAX_MATCH ? end - k : MAX_MATCH;
        while (l < lim && data[k + l] == v)
            l++;
        r->pos[r->n] = (uint32_t)k;
        r->len[r->n++] = (uint16_t)l;
        lfreq[v] -= (uint32_t)l;
        lfreq[257 + len_code[l]]++;
        dfreq[0]++;
        pos = k + l;
    }
}

/* One dynamic block of literals and runs (the run-length coding). */
static void write_block_runs(bw_t *w, const uint8_t *data, size_t bs, size_t be, const runs_t *r,
                             uint32_t *lfreq, uint32_t *dfreq, int final)
{
    uint8_t llen[NLITLEN], dlen[30];
    uint16_t lcode[NLITLEN], dcode[30];
    lfreq[256] = 1;
    dfreq[0] += dfreq[0] == 0; /* two distance codes: a complete code */
    dfreq[1] += dfreq[1] == 0;
    huff_lengths(lfreq, NLITLEN, MAX_BITS, llen);
    huff_codes(llen, NLITLEN, lcode);
    huff_lengths(dfreq, 30, MAX_BITS, dlen);
    huff_codes(dlen, 30, dcode);
    int hlit = NLITLEN;
    while (hlit > 257 && llen[hlit - 1] == 0)
        hlit--;
    put(w, final ? 1 : 0, 1);
    put(w, 2, 2);
    write_header(w, llen, hlit, dlen, 2);

    uint32_t tab[256]; /* literal code | length << 16 */
    for (int i = 0; i < 256; i++)
        tab[i] = lcode[i] | (uint32_t)llen[i] << 16;
    uint8_t *p = w->p;
    uint64_t bits = w->bits;
    unsigned n = w->n;
    size_t i = bs;
    for (size_t k = 0; k <= r->n; k++) {
        size_t lit_end = k < r->n ? r->pos[k] : be;
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
        if (k < r->n) {
            unsigned l = r->len[k], c = len_code[l];
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

/* Bits the block's symbols take with their own Huffman codes (header aside). */
static uint64_t block_cost(uint32_t *lfreq, const uint32_t *dfreq)
{
    uint8_t llen[NLITLEN], dlen[30];
    lfreq[256] = 1;
    huff_lengths(lfreq, NLITLEN, MAX_BITS, llen);
    huff_lengths(dfreq, 30, MAX_BITS, dlen);
    uint64_t bits = 0;
    for (int i = 0; i < NLITLEN; i++)
        bits += (uint64_t)lfreq[i] * (llen[i] + (i >= 257 ? len_extra[i - 257] : 0));
    for (int i = 0; i < 30; i++)
        bits += (uint64_t)dfreq[i] * (dlen[i] + dist_extra[i]);
    return bits;
}

size_t sc_deflate_segment_lvl(const uint8_t *data, size_t len, int final, uint8_t *out,
                              sc_simd_level_t lvl)
{
    pthread_once(&tables_once, tables_init);
    static pthread_once_t dist_once = PTHREAD_ONCE_INIT;
    pthread_once(&dist_once, dist_tables_init);
    bw_t w = {out, 0, 0};
    sym_t *syms = malloc(sizeof(sym_t) * BLOCK_IN);
    /* a run takes >= 3 bytes, so a block has at most BLOCK_IN / 3 of them */
    runs_t runs = {malloc(sizeof(uint32_t) * (BLOCK_IN / 3 + 1)),
                   malloc(sizeof(uint16_t) * (BLOCK_IN / 3 + 1)), 0};
    mf_t m = {calloc((size_t)1 << HASH_BITS, sizeof(uint32_t)), malloc(WINDOW * sizeof(uint32_t)),
              0};
    if (!syms || !m.head || !m.prev || !runs.pos || !runs.len) {
        free(syms);
        free(m.head);
        free(m.prev);
        free(runs.pos);
        free(runs.len);
        return 0;
    }
    m.wide = lvl >= SC_SIMD_AVX2 && sc_simd_cpu_level() >= SC_SIMD_AVX2;
    size_t pos = 0;
    do {
        size_t bs = pos, end = len - pos > BLOCK_IN ? pos + BLOCK_IN : len, ns = 0;
        uint32_t lfreq[NLITLEN] = {0}, dfreq[30] = {0};
        uint32_t rlfreq[NLITLEN] = {0}, rdfreq[30] = {0};
        rle_block(data, pos, end, m.wide, &runs, rlfreq, rdfreq);
        uint64_t rcost = block_cost(rlfreq, rdfreq);
        if (rcost * 10 >= (uint64_t)(end - pos) * NOISE_BITS_X10) {
            /* noise: LZ would find nothing worth its time */
            pos = end;
            write_block_runs(&w, data, bs, end, &runs, rlfreq, rdfreq, final && pos >= len);
            continue;
        }
        /* smooth blocks (few bits per byte) gain most from a deep search and
         * are quick to search (long matches); textured ones get a short one */
        int chain = rcost * 10 < (uint64_t)(end - pos) * SMOOTH_BITS_X10 ? MAX_CHAIN : SHORT_CHAIN;
        size_t i = pos, misses = 0;
        /* hashing reads 4 bytes: the last 3 of a block are literals */
        size_t lim = end >= 3 ? end - 3 : 0;
        unsigned dist = 0;
        size_t l = 0;
        int have = 0; /* l/dist hold the match found at i by the lazy step */
        while (i < lim) {
            if (!have)
                l = mf_find(&m, data, i, end - i > MAX_MATCH ? MAX_MATCH : end - i, &dist, chain);
            have = 0;
            if (l == 0) {
                size_t step = 1 + (misses++ >> SKIP_SHIFT);
                for (size_t k = 0; k < step && i < end; k++, i++) {
                    syms[ns].len = 0;
                    syms[ns++].dist_or_lit = data[i];
                    lfreq[data[i]]++;
                }
                continue;
            }
            misses = 0;
            if (l < NICE_MATCH && i + 1 < lim) {
                unsigned d2 = 0;
                size_t max2 = end - i - 1 > MAX_MATCH ? MAX_MATCH : end - i - 1;
                size_t l2 = mf_find(&m, data, i + 1, max2, &d2, chain);
                if (l2 > l) { /* literal now, the longer match next */
                    syms[ns].len = 0;
                    syms[ns++].dist_or_lit = data[i];
                    lfreq[data[i]]++;
                    i++;
                    l = l2;
                    dist = d2;
                    have = 1;
                    continue;
                }
            }
            syms[ns].len = (uint16_t)l;
            syms[ns++].dist_or_lit = (uint16_t)dist;
            lfreq[257 + len_code[l]]++;
            dfreq[dist_code(dist)]++;
            /* i (and i + 1 when probed) are inserted already */
            size_t ins_end = i + l;
            if (ins_end > lim)
                ins_end = lim;
            for (size_t k = i + 2; k < ins_end; k++)
                mf_insert(&m, data, k);
            i += l;
        }
        for (; i < end; i++) {
            syms[ns].len = 0;
            syms[ns++].dist_or_lit = data[i];
            lfreq[data[i]]++;
        }
        pos = end;
        if (rcost < block_cost(lfreq, dfreq))
            write_block_runs(&w, data, bs, end, &runs, rlfreq, rdfreq, final && pos >= len);
        else
            write_block(&w, syms, ns, lfreq, dfreq, final && pos >= len);
    } while (pos < len);
    if (!final) { /* sync flush: empty stored block, byte-aligned */
        put(&w, 0, 3);
        align_byte(&w);
        put(&w, 0x0000, 16);
        put(&w, 0xFFFF, 16);
    }
    align_byte(&w);
    free(syms);
    free(m.head);
    free(m.prev);
    free(runs.pos);
    free(runs.len);
    return (size_t)(w.p - out);
}

size_t sc_deflate_segment(const uint8_t *data, size_t len, int final, uint8_t *out)
{
    return sc_deflate_segment_lvl(data, len, final, out, sc_simd_level());
}
