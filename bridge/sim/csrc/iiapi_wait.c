/*
 * OpenAPI simulator: IIapi_wait(), where asynchronous operations progress.
 *
 * As in the real OpenAPI (apiwait.c): operations already completed but not
 * yet delivered to this thread are delivered first and the call returns at
 * once; otherwise, if this thread has no operation waiting for the server,
 * the call returns at once with IIAPI_ST_WARNING ("nothing to do");
 * otherwise it blocks on this thread's sockets for up to wt_timeout ms
 * (-1: until something completes) and returns after the first completion.
 * IIapi_wait() from inside a callback fails (IIAPI_ST_FAILURE).
 *
 * Threads: an operation that reads the server belongs to the thread that
 * issued it (the real library keeps GCA requests and its operation queue in
 * thread-local storage), so a thread blocked here never steals or stalls
 * another thread's connection. The global mutex is released around poll().
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iiapi_core.h"

#define MAX_POLL 256

/* The thread's connections with a reading operation (or a TCP connect). */
static int mine(conn_t **out, int max)
{
    size_t n;
    hdr_t **all = reg_all(&n);
    pthread_t self = pthread_self();
    int k = 0;
    for (size_t i = 0; i < n && k < max; i++) {
        if (all[i]->kind != K_CONN) continue;
        conn_t *c = (conn_t *)all[i];
        int reads = c->rd.kind != OP_NONE && pthread_equal(c->rd.owner, self);
        int aborts = c->abort_gp && pthread_equal(c->abort_owner, self);
        if (!reads && !aborts) continue;
        out[k++] = c;
    }
    return k;
}

/* The TCP connect finished: send the CONNECT frame or fail. */
static void finish_tcp_connect(conn_t *c, clist_t *cl)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err == 0 && conn_send(c, 'C', c->hello, c->hello_len) == 0) {
        c->st = CS_WAIT_ACCEPT;
        return;
    }
    conn_failed(c, E_CLFE05_BS_CONNECT_ERR, MSG_CLFE05);
    end_read(c, cl, IIAPI_ST_FAILURE, &c->h);
}

static void expire(conn_t *c, clist_t *cl, long long now)
{
    if (c->rd.kind == OP_NONE || c->rd.deadline < 0 || now < c->rd.deadline) return;
    if (c->rd.kind == OP_GETEVENT) {
        end_read(c, cl, IIAPI_ST_WARNING, NULL); /* timeout: WARNING, not NO_DATA */
        return;
    }
    if (c->rd.kind == OP_CONNECT) {
        /* Not checked against the real library (it needs a server that
         * accepts and never answers): GCA's "partner unavailable", then E_AP0001. */
        conn_failed(c, E_GC0021_NO_PARTNER, MSG_GC0021);
        end_read(c, cl, IIAPI_ST_FAILURE, &c->h);
    }
}

/* One round: poll this thread's sockets, read and process. */
static int poll_round(conn_t **cs, int n, int timeout, clist_t *cl)
{
    struct pollfd pf[MAX_POLL];
    if (n <= 0 || n > MAX_POLL) return 0;
    for (int i = 0; i < n; i++) {
        pf[i].fd = cs[i]->fd;
        pf[i].events = cs[i]->st == CS_CONNECTING ? POLLOUT : POLLIN;
        pf[i].revents = 0;
        cs[i]->pollers++;
    }
    pthread_mutex_unlock(&g_lock);
    int rc = poll(pf, (nfds_t)(unsigned)n, timeout);
    int saved = errno;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < n; i++) {
        conn_t *c = cs[i];
        c->pollers--;
        if (c->doomed) { /* freed by another thread while we polled */
            if (c->pollers == 0) {
                if (c->fd >= 0) close(c->fd);
                free(c->rbuf);
                free(c->hello);
                free(c);
            }
            cs[i] = NULL;
            continue;
        }
        if (c->st == CS_FAILED) {
            if (c->pollers == 0 && c->fd >= 0) {
                close(c->fd);
                c->fd = -1;
            }
            continue;
        }
        if (rc <= 0 || pf[i].revents == 0) continue;
        if (c->st == CS_CONNECTING) {
            finish_tcp_connect(c, cl);
            continue;
        }
        if (c->abort_gp) { /* only the peer's close matters now */
            if (conn_read(c) < 0) {
                conn_aborted(c, cl);
                cs[i] = NULL; /* freed, or left to the thread still polling it */
            } else {
                c->rpos = c->rlen = 0;
            }
            continue;
        }
        if (conn_read(c) < 0) {
            conn_process(c, cl); /* frames that arrived before the close */
            conn_lost(c, cl);
            continue;
        }
        conn_process(c, cl);
    }
    return rc < 0 && saved != EINTR ? -1 : 0;
}

static int next_timeout(conn_t **cs, int n, long long wait_deadline)
{
    long long now = now_ms();
    long long d = wait_deadline;
    for (int i = 0; i < n; i++)
        if (cs[i]->rd.deadline >= 0 && (d < 0 || cs[i]->rd.deadline < d))
            d = cs[i]->rd.deadline;
    if (d < 0) return -1;
    return d <= now ? 0 : (int)(d - now > 2000000000 ? 2000000000 : d - now);
}

static IIAPI_STATUS wait_locked(long timeout, clist_t *cl)
{
    if (take_deferred(cl, pthread_self()) > 0) return IIAPI_ST_SUCCESS;
    conn_t *cs[MAX_POLL];
    int n = mine(cs, MAX_POLL);
    if (n == 0) return IIAPI_ST_WARNING; /* nothing to do */
    for (int i = 0; i < n; i++) conn_process(cs[i], cl); /* already buffered */
    if (cl->head) return IIAPI_ST_SUCCESS;
    long long wait_deadline = timeout < 0 ? -1 : now_ms() + timeout;
    for (;;) {
        int t = next_timeout(cs, n, wait_deadline);
        if (poll_round(cs, n, t, cl) < 0) return IIAPI_ST_FAILURE;
        long long now = now_ms();
        for (int i = 0; i < n; i++)
            if (cs[i]) expire(cs[i], cl, now);
        if (cl->head) return IIAPI_ST_SUCCESS;
        if (wait_deadline >= 0 && now >= wait_deadline) return IIAPI_ST_SUCCESS;
        n = mine(cs, MAX_POLL);
        if (n == 0) return IIAPI_ST_SUCCESS;
    }
}

EXPORT void IIapi_wait(IIAPI_WAITPARM *p)
{
    if (!p) return;
    p->wt_status = IIAPI_ST_SUCCESS;
    if (tls_cb_depth > 0) {
        p->wt_status = IIAPI_ST_FAILURE;
        return;
    }
    clist_t cl = {0};
    pthread_mutex_lock(&g_lock);
    if (!g_init) p->wt_status = IIAPI_ST_NOT_INITIALIZED;
    else p->wt_status = wait_locked(p->wt_timeout, &cl);
    pthread_mutex_unlock(&g_lock);
    flush(&cl);
}
