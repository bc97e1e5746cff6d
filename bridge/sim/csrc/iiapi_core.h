/*
 * OpenAPI simulator: internal state shared by iiapi_core.c (handles, errors,
 * completions, the wire), iiapi_api.c (the entry points) and iiapi_wait.c.
 *
 * Concurrency model (see iiapi_wait.c for the full story): one global mutex
 * guards every handle and list. API calls take it, do their work, release it
 * and only then deliver completions (set gp_completed, run gp_callback), so a
 * callback may call the API again. Operations that need the server belong to
 * the thread that issued them, as in the real OpenAPI (its GCA requests and
 * operation queue are thread-local): only that thread's IIapi_wait() reads
 * the socket for them. The mutex is never held across a blocking poll().
 */
#ifndef IIAPI_CORE_H
#define IIAPI_CORE_H

#include "iiapi_sim.h"

#define EXPORT __attribute__((visibility("default")))

enum hkind { K_ENV = 1, K_CONN, K_TRAN, K_STMT, K_EVT, K_ERR };

typedef struct err {
    II_LONG type;
    II_LONG code;
    char sqlstate[II_SQLSTATE_LEN + 1];
    char *msg;
    int server;
    struct err *next;
} err_t;

/* Common head of every handle; getErrorInfo works on any of them. */
typedef struct hdr {
    int kind;
    err_t *errs;
    int nread; /* errors already returned by getErrorInfo */
    IIAPI_SVR_ERRINFO svr;
} hdr_t;

typedef struct env {
    hdr_t h;
    sim_datefmt fmt;
    int version;
    IIAPI_EVENT_CALLBACK event_func; /* IIAPI_EP_EVENT_FUNC, or NULL */
    int nconns;
    int is_default;
} env_t;

enum opkind { OP_NONE = 0, OP_CONNECT, OP_GETEVENT, OP_QINFO, OP_DESC, OP_COLS, OP_CLOSE };

/* The one operation that currently reads a connection. */
typedef struct op {
    enum opkind kind;
    IIAPI_GENPARM *gp;
    void *parm;
    pthread_t owner;
    struct stmt *st;
    long long deadline; /* CLOCK_MONOTONIC ms; -1 = none */
    int rows_got;
} op_t;

enum cstate { CS_IDLE, CS_CONNECTING, CS_WAIT_ACCEPT, CS_OPEN, CS_FAILED, CS_CLOSED };

typedef struct evcb {
    struct evcb *next;
    char *name, *owner, *db;
    unsigned char time[IIAPI_DTE_LEN];
    int has_text;
    uint16_t tlen;
    unsigned char text[256];
    int dispatched;
    int holders;
} evcb_t;

enum estate { ES_WAIT, ES_DONE, ES_CNCL };

typedef struct evh {
    hdr_t h;
    struct conn *conn;
    struct evh *next;
    enum estate st;
    IIAPI_CATCHEVENTPARM *parm; /* NULL: orphaned by a refused re-arm */
    char *sel_name, *sel_owner;
    evcb_t *cb;
    int text_done;
    IIAPI_DESCRIPTOR desc;
} evh_t;

typedef struct tran {
    hdr_t h;
    struct conn *conn;
    int autocommit;
    int nstmts;
} tran_t;

typedef struct stmt {
    hdr_t h;
    struct conn *conn;
    tran_t *tran;
    struct stmt *next;
    int done, ok, rowcount, have_header, ncols, cancelled, lost;
    IIAPI_DESCRIPTOR *desc;
} stmt_t;

typedef struct conn {
    hdr_t h;
    env_t *env;
    int fd;
    enum cstate st;
    unsigned char *rbuf;
    size_t rpos, rlen, rcap;
    unsigned char *hello; /* CONNECT frame, sent once TCP is up */
    size_t hello_len;
    op_t rd;
    tran_t *tran;
    stmt_t *stmts;
    evh_t *evhs; /* in arming order: oldest first */
    evcb_t *cbq;
    int pollers;
    int doomed;
    /* An IIapi_abort waiting for the peer to close (see IIapi_abort), and
     * the thread whose IIapi_wait completes it; NULL when none. */
    IIAPI_GENPARM *abort_gp;
    pthread_t abort_owner;
    char addr[300]; /* host:port, for messages */
} conn_t;

/* A completion to deliver once the mutex is released. */
typedef struct comp {
    IIAPI_GENPARM *gp;
    IIAPI_STATUS st;
    hdr_t *eh;
    pthread_t owner;
    struct comp *next;
} comp_t;

/* A call of IIAPI_EP_EVENT_FUNC to make once the mutex is released. */
typedef struct evcall {
    IIAPI_EVENT_CALLBACK fn;
    IIAPI_EVENTPARM parm;
    unsigned char time[IIAPI_DTE_LEN];
    struct evcall *next;
} evcall_t;

typedef struct {
    comp_t *head, *tail;
    evcall_t *evhead, *evtail;
} clist_t;

extern pthread_mutex_t g_lock;
extern int g_init;
extern env_t *g_default_env;
extern sim_datefmt g_proc_fmt;
extern __thread int tls_cb_depth;

/* handles */
void reg_add(hdr_t *h);
void reg_del(hdr_t *h);
int reg_has(const void *p, int kind);
hdr_t **reg_all(size_t *n);
void *hnew(size_t size, int kind);
void hfree(hdr_t *h);

/* errors */
void err_clear(hdr_t *h);
void err_add(hdr_t *h, II_LONG type, II_LONG code, const char *sqlstate, int server,
             const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void err_local(hdr_t *h, II_LONG code, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
IIAPI_STATUS err_status(const hdr_t *h);
hdr_t *orphan_errors(hdr_t *h);
void orphans_free_all(void);

/* completions */
void gp_begin(IIAPI_GENPARM *gp);
void complete(clist_t *cl, IIAPI_GENPARM *gp, IIAPI_STATUS st, hdr_t *h);
void defer(IIAPI_GENPARM *gp, IIAPI_STATUS st, hdr_t *h);
int take_deferred(clist_t *cl, pthread_t self);
void forget_handle(clist_t *cl, hdr_t *h);
void flush(clist_t *cl);

/* connections and the wire */
long long now_ms(void);
int conn_send(conn_t *c, unsigned char type, const unsigned char *payload, size_t n);
int conn_read(conn_t *c);
void conn_process(conn_t *c, clist_t *cl);
void conn_lost(conn_t *c, clist_t *cl);
void conn_failed(conn_t *c, II_LONG code, const char *msg);
void conn_free(conn_t *c, clist_t *cl);
void conn_aborted(conn_t *c, clist_t *cl);
void fail_pending(conn_t *c, clist_t *cl);
void start_read(conn_t *c, enum opkind kind, IIAPI_GENPARM *gp, void *parm, stmt_t *st,
                long long deadline);
void end_read(conn_t *c, clist_t *cl, IIAPI_STATUS st, hdr_t *eh);
void dispatch_events(conn_t *c, clist_t *cl);
void evh_release_cb(evh_t *e);
void stmt_free(stmt_t *s, clist_t *cl);
void evh_free(evh_t *e, clist_t *cl);
int stmt_fill_qinfo(stmt_t *s, IIAPI_GETQINFOPARM *p);
void stmt_fill_desc(stmt_t *s, IIAPI_GETDESCRPARM *p);

#endif
