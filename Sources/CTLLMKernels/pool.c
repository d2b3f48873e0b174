// A fixed pool of compute threads. Workers spin briefly on a generation counter, then sleep
// on a condition variable: decode runs hundreds of small parallel regions per token, where a
// futex wake-up per region would cost more than the work.
#include "tllm_matmul.h"
#include "tllm_kernels.h"
#include "dispatch.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

struct tllm_pool {
    int threads;
    pthread_t *workers;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    _Atomic unsigned generation;
    _Atomic int remaining;
    _Atomic int stop;
    void (*task)(void *, int, int);
    void *context;
    unsigned features;  // the submitting thread's SIMD paths, for the workers to use
};

typedef struct {
    tllm_pool *pool;
    int index;
} worker_arg;

static void *worker_main(void *raw) {
    worker_arg arg = *(worker_arg *)raw;
    free(raw);
    tllm_pool *pool = arg.pool;
    unsigned seen = 0;
    for (;;) {
        unsigned generation;
        int spins = 0;
        while ((generation = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen) {
            if (atomic_load(&pool->stop)) return NULL;
            if (++spins < 20000) {
#if defined(__x86_64__)
                __builtin_ia32_pause();
#endif
                continue;
            }
            pthread_mutex_lock(&pool->mutex);
            while (atomic_load(&pool->generation) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->wake, &pool->mutex);
            pthread_mutex_unlock(&pool->mutex);
            spins = 0;
        }
        if (atomic_load(&pool->stop)) return NULL;
        seen = generation;
        tllm_set_cpu_features(pool->features);
        pool->task(pool->context, arg.index, pool->threads);
        atomic_fetch_sub_explicit(&pool->remaining, 1, memory_order_acq_rel);
    }
}

tllm_pool *tllm_pool_create(int threads) {
    if (threads < 1) threads = 1;
    tllm_pool *pool = calloc(1, sizeof(tllm_pool));
    pool->threads = threads;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->workers = calloc((size_t)threads, sizeof(pthread_t));
    for (int i = 1; i < threads; i++) {
        worker_arg *arg = malloc(sizeof(worker_arg));
        arg->pool = pool;
        arg->index = i;
        pthread_create(&pool->workers[i], NULL, worker_main, arg);
    }
    return pool;
}

void tllm_pool_destroy(tllm_pool *pool) {
    if (!pool) return;
    atomic_store(&pool->stop, 1);
    pthread_mutex_lock(&pool->mutex);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    for (int i = 1; i < pool->threads; i++) pthread_join(pool->workers[i], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->workers);
    free(pool);
}

int tllm_pool_threads(const tllm_pool *pool) { return pool ? pool->threads : 1; }

void tllm_pool_run(tllm_pool *pool, void (*task)(void *, int, int), void *context) {
    if (!pool || pool->threads == 1) {
        task(context, 0, 1);
        return;
    }
    pool->task = task;
    pool->context = context;
    pool->features = tllm_active_features();
    atomic_store_explicit(&pool->remaining, pool->threads - 1, memory_order_release);
    pthread_mutex_lock(&pool->mutex);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_acq_rel);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    task(context, 0, pool->threads);
    while (atomic_load_explicit(&pool->remaining, memory_order_acquire) > 0) {
#if defined(__x86_64__)
        __builtin_ia32_pause();
#else
        sched_yield();
#endif
    }
}
