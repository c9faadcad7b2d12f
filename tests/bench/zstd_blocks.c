/*
 * zstd_blocks - what zstd costs on this machine for a segment's bytes, cut
 * into independent blocks as compressed segments are (FORMAT.md Part B):
 * ratio, compression and decompression speed per level and block size, in
 * thread CPU time (best of 3 compressions and 5 decompressions), so other
 * processes on the machine change the figures less than wall time would.
 * The table in tests/bench/NOTES.md, "Compression on a slower CPU":
 *   cc -O2 tests/bench/zstd_blocks.c -lzstd -o /tmp/zstd_blocks
 *   /tmp/zstd_blocks DATA_DIR/PARTITION/00000000000000015335.log
 * (a plain 16 MiB segment of the compress workload's JSON events). Not
 * built by make: a measuring aid, not part of Protobus.
 */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_c_literalCompressionMode */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void run(const char *src, size_t n, int level, int literals, size_t block)
{
    size_t nb = (n + block - 1) / block, total = 0;
    char **c = calloc(nb, sizeof *c);
    size_t *cl = calloc(nb, sizeof *cl);
    char *out = malloc(block);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    if (!c || !cl || !out || !cc || !dc) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level);
    if (literals)
        ZSTD_CCtx_setParameter(cc, ZSTD_c_literalCompressionMode, literals);
    double bc = 1e9, bd = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = cpu_s();
        total = 0;
        for (size_t i = 0; i < nb; i++) {
            size_t len = i * block + block > n ? n - i * block : block;
            size_t cap = ZSTD_compressBound(len);
            if (!c[i] && !(c[i] = malloc(cap)))
                exit(1);
            cl[i] = ZSTD_compress2(cc, c[i], cap, src + i * block, len);
            if (ZSTD_isError(cl[i]))
                exit(1);
            total += cl[i];
        }
        double t = cpu_s() - t0;
        bc = t < bc ? t : bc;
    }
    for (int rep = 0; rep < 5; rep++) {
        double t0 = cpu_s();
        for (size_t i = 0; i < nb; i++) {
            size_t len = i * block + block > n ? n - i * block : block;
            if (ZSTD_decompressDCtx(dc, out, len, c[i], cl[i]) != len)
                exit(1);
        }
        double t = cpu_s() - t0;
        bd = t < bd ? t : bd;
    }
    printf("blocks %5zu KiB  level %2d  literals %s  ratio %.2f  compress %5.0f MB/s  "
           "decompress %5.0f MB/s\n",
           block >> 10, level, literals ? "raw " : "huff", (double)n / (double)total,
           (double)n / 1e6 / bc, (double)n / 1e6 / bd);
    for (size_t i = 0; i < nb; i++)
        free(c[i]);
    free(c);
    free(cl);
    free(out);
    ZSTD_freeCCtx(cc);
    ZSTD_freeDCtx(dc);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f || fseek(f, 0, SEEK_END) != 0) {
        perror(argv[1]);
        return 1;
    }
    long n = ftell(f);
    char *src = n > 0 ? malloc((size_t)n) : NULL;
    if (!src || fseek(f, 0, SEEK_SET) != 0 || fread(src, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: cannot read it\n", argv[1]);
        return 1;
    }
    fclose(f);
    run(src, (size_t)n, 3, 0, 256 << 10);
    run(src, (size_t)n, 3, ZSTD_ps_disable, 256 << 10);
    run(src, (size_t)n, 1, 0, 256 << 10);
    run(src, (size_t)n, -1, 0, 256 << 10);
    run(src, (size_t)n, 3, 0, 64 << 10);
    run(src, (size_t)n, 3, 0, 1 << 20);
    free(src);
    return 0;
}
