/* partsubmit - see partsubmit.h. */
#include "partsubmit.h"

#include "pb_errors.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static size_t done_count;
static int last_status;

static void on_done(pub_part *part)
{
    pthread_mutex_lock(&lock);
    done_count++;
    last_status = part->status;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

int partsubmit(partition *p, pub_event *ev, uint32_t n)
{
    /* Static: a batch the writer still holds after a timeout stays valid. */
    static pub_batch batch;
    static pub_part part;
    static uint32_t idx[PARTSUBMIT_MAX];
    if (n > PARTSUBMIT_MAX)
        return PB_EINVAL;
    memset(&batch, 0, sizeof batch);
    for (uint32_t i = 0; i < n; i++)
        idx[i] = i;
    batch.done = on_done;
    atomic_init(&batch.pending, 1);
    batch.nevents = n;
    batch.events = ev;
    batch.nparts = 1;
    batch.parts = &part;
    part = (pub_part){.batch = &batch, .partition = p, .events = idx, .count = n};
    pthread_mutex_lock(&lock);
    size_t want = done_count + 1;
    pthread_mutex_unlock(&lock);
    partition_submit(p, &part);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&lock);
    while (done_count < want && pthread_cond_timedwait(&cond, &lock, &ts) == 0)
        ;
    int st = done_count == want ? last_status : PB_ETIMEDOUT;
    pthread_mutex_unlock(&lock);
    return st;
}
