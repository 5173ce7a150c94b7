/* A one-shot completion: a thread starts work that ends on another thread (a
 * callback) and waits for it. The callback stores its results in the waiter's
 * struct, then calls sc_oneshot_signal; the mutex orders those stores before
 * the waiter's reads. After sc_oneshot_signal the callback must not touch the
 * struct again: the waiter may return at once and its stack frame is gone. */
#ifndef SCENECOMP_CORE_ONESHOT_H
#define SCENECOMP_CORE_ONESHOT_H

#include <pthread.h>
#include <stdbool.h>

typedef struct sc_oneshot {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} sc_oneshot_t;

void sc_oneshot_init(sc_oneshot_t *o);
/* Once, from the callback; may run before sc_oneshot_wait starts. */
void sc_oneshot_signal(sc_oneshot_t *o);
/* Waits for the signal, then releases o's mutex and condition. */
void sc_oneshot_wait(sc_oneshot_t *o);

#endif
