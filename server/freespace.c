/*
 * freespace - min_free_bytes (see freespace.h).
 *
 * Threads: any.
 */
#include "freespace.h"

uint64_t freespace_margin(uint64_t setting, uint64_t total)
{
    if (setting != FREESPACE_AUTO)
        return setting;
    uint64_t pct = total / 100 * FREESPACE_AUTO_PERCENT;
    return pct < FREESPACE_AUTO_BYTES ? pct : FREESPACE_AUTO_BYTES;
}

bool freespace_low(const fileio *io, const char *dir, uint64_t setting, uint64_t *avail,
                   uint64_t *margin)
{
    uint64_t total;
    if (setting == 0 || !io->space || io->space(io, dir, avail, &total) < 0)
        return false;
    *margin = freespace_margin(setting, total);
    return *avail < *margin;
}
