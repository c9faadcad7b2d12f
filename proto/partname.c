/*
 * partname - the one rule of what a partition name is (see partname.h).
 * Pure; any thread.
 */
#include "partname.h"

_Static_assert(PB_PARTITION_NAME_MAX == 100, "PARTNAME_RULE spells the maximum out");

bool partname_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

bool partname_valid(const char *name, size_t len)
{
    /* A leading '.' is what directory listings (ls, readdir users, our own
     * readers) treat as hidden; it also rules out "." and "..". */
    if (len == 0 || len > PB_PARTITION_NAME_MAX || name[0] == '.')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!partname_char_ok(name[i]))
            return false;
    return true;
}
