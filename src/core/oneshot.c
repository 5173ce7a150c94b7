#include "core/oneshot.h"

void sc_oneshot_init(sc_oneshot_t *o)
{
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->done = false;
}

void sc_oneshot_signal(sc_oneshot_t *o)
{
    pthread_mutex_lock(&o->mu);
    o->done = true;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu); /* the last touch: the waiter may free o now */
}

void sc_oneshot_wait(sc_oneshot_t *o)
{
    pthread_mutex_lock(&o->mu);
    while (!o->done)
        pthread_cond_wait(&o->cv, &o->mu);
    pthread_mutex_unlock(&o->mu);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
}
