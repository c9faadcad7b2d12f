/*
 * reader - reads a partition's segment files (reader.c). Its API is public,
 * declared in protobus_reader.h; the daemon's and the CLI's readers also use
 * the record codec, which this internal header adds.
 */
#ifndef PB_READER_H
#define PB_READER_H

#include "protobus_reader.h"
#include "record.h"

#endif
