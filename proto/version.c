/* pb_version: the release version the library was built as
 * (protobus_version.h). */
#include "protobus_version.h"

const char *pb_version(void)
{
    return PB_VERSION_STRING;
}
