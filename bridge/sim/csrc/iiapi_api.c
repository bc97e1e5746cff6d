/*
 * OpenAPI simulator: the IIapi_* entry points pyngres 0.5.0 binds.
 *
 * Completion rules, as the real OpenAPI (apidspth.c / apisqle.c):
 *  - argument and handle errors complete inside the call (INVALID_HANDLE,
 *    NOT_INITIALIZED, and the local checks of IIapi_disconnect and
 *    IIapi_autocommit: E_AP0003 / E_AP0004 / E_AP0005);
 *  - state changes that need no I/O (catchEvent, cancel and close of an
 *    event handle, getDescriptor/getColumns on an event handle, close or
 *    getQueryInfo of a statement whose response is already read) complete
 *    inside the call, callbacks included, because the real dispatcher runs
 *    them at once;
 *  - everything that talks to the server (connect, query, getQueryInfo,
 *    getDescriptor, getColumns, close before the response is read,
 *    getEvent, disconnect, abort, autocommit, setConnectParam) returns with
 *    gp_completed = 0 and completes inside a later IIapi_wait() of the same
 *    thread.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "iiapi_core.h"

static env_t *env_new(int version)
{
    env_t *e = hnew(sizeof *e, K_ENV);
    if (!e) return NULL;
    e->fmt = g_proc_fmt;
    e->version = version;
    return e;
}

/* Begins an asynchronous call: resets genParm, takes the lock. */
#define BEGIN(gp)                                                   \
    clist_t cl = {0};                                               \
    gp_begin(gp);                                                   \
    pthread_mutex_lock(&g_lock);                                    \
    if (!g_init) {                                                  \
        complete(&cl, (gp), IIAPI_ST_NOT_INITIALIZED, NULL);        \
        goto out;                                                   \
    }

#define END                                                         \
    out:                                                            \
    pthread_mutex_unlock(&g_lock);                                  \
    flush(&cl)

static void fail_with(clist_t *cl, IIAPI_GENPARM *gp, hdr_t *h, II_LONG code,
                      const char *sqlstate, const char *msg)
{
    err_local(h, code, sqlstate, "%s", msg);
    complete(cl, gp, IIAPI_ST_FAILURE, h);
}


/* ------------------------------------------------------------------ */
/* initialize / terminate / environment */

/* The highest in_version this library accepts: 11, as Actian Client 1.5,
 * unless BRIDGE_SIM_MAX_API_VERSION (1..11) makes it act as an older runtime
 * (Ingres 10's library accepts at most 8: apiinit.c), so that an
 * application's choice of version can be tested. Read at each call. */
static int max_version(void)
{
    const char *v = getenv("BRIDGE_SIM_MAX_API_VERSION");
    char *end = NULL;
    long n = v && *v ? strtol(v, &end, 10) : 11;
    return end && *end ? 11 : n < 1 ? 1 : n > 11 ? 11 : (int)n;
}

EXPORT void IIapi_initialize(IIAPI_INITPARM *p)
{
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    if (p->in_version < 1 || p->in_version > max_version()) {
        p->in_status = IIAPI_ST_FAILURE;
        pthread_mutex_unlock(&g_lock);
        return;
    }
    if (g_init == 0) {
        sim_datefmt_defaults(&g_proc_fmt);
        g_default_env = env_new(1);
        if (g_default_env) g_default_env->is_default = 1;
    }
    g_init++;
    p->in_status = IIAPI_ST_SUCCESS;
    if (p->in_version >= 2) {
        env_t *e = env_new(p->in_version);
        if (!e) p->in_status = IIAPI_ST_OUT_OF_MEMORY;
        p->in_envHandle = e;
    }
    pthread_mutex_unlock(&g_lock);
}

static void free_everything(void)
{
    clist_t cl = {0};
    size_t n;
    hdr_t **all = reg_all(&n);
    for (size_t i = n; i-- > 0;) {
        all = reg_all(&n);
        if (i < n && all[i]->kind == K_CONN) {
            conn_t *c = (conn_t *)all[i];
            if (c->fd >= 0 && c->st == CS_OPEN) conn_send(c, 'B', NULL, 0);
            memset(&c->rd, 0, sizeof c->rd);
            conn_free(c, &cl);
            i = n;
        }
    }
    orphans_free_all();
    all = reg_all(&n);
    while (n > 0) {
        hfree(all[n - 1]);
        all = reg_all(&n);
    }
    take_deferred(&cl, pthread_self());
    for (comp_t *c = cl.head; c;) { /* nothing left to deliver them to */
        comp_t *x = c->next;
        free(c);
        c = x;
    }
    g_default_env = NULL;
}

EXPORT void IIapi_terminate(IIAPI_TERMPARM *p)
{
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    if (!g_init) p->tm_status = IIAPI_ST_NOT_INITIALIZED;
    else {
        /* WARNING while other initializations keep the API alive. */
        p->tm_status = --g_init > 0 ? IIAPI_ST_WARNING : IIAPI_ST_SUCCESS;
        if (g_init == 0) free_everything();
    }
    pthread_mutex_unlock(&g_lock);
}

/* As IIapi_releaseEnv in aip/apiinit.c: each connection still open under the
 * environment is dropped (IIapi_abortGCA: no goodbye) and deleted with every
 * handle under it, and nothing it had pending is ever called back. Returns
 * how many were dropped. */
static int drop_connections(env_t *e)
{
    clist_t cl = {0};
    int dropped = 0;
    size_t n;
    hdr_t **all = reg_all(&n);
    for (size_t i = n; i-- > 0;) {
        all = reg_all(&n);
        if (i >= n || all[i]->kind != K_CONN || ((conn_t *)all[i])->env != e) continue;
        conn_t *c = (conn_t *)all[i];
        memset(&c->rd, 0, sizeof c->rd);
        for (evh_t *h = c->evhs; h; h = h->next) h->parm = NULL;
        conn_free(c, &cl);
        dropped++;
        i = n;
    }
    for (comp_t *c = cl.head; c;) {
        comp_t *x = c->next;
        free(c);
        c = x;
    }
    return dropped;
}

EXPORT void IIapi_releaseEnv(IIAPI_RELENVPARM *p)
{
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    env_t *e = p->re_envHandle;
    if (!g_init) p->re_status = IIAPI_ST_NOT_INITIALIZED;
    else if (!reg_has(e, K_ENV) || e->is_default) p->re_status = IIAPI_ST_INVALID_HANDLE;
    else {
        /* WARNING when connections had to be dropped, as the real library. */
        int dropped = e->nconns > 0 ? drop_connections(e) : 0;
        hfree(&e->h);
        p->re_status = dropped ? IIAPI_ST_WARNING : IIAPI_ST_SUCCESS;
    }
    pthread_mutex_unlock(&g_lock);
}

EXPORT void IIapi_setEnvParam(IIAPI_SETENVPRMPARM *p)
{
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    env_t *e = p->se_envHandle;
    int offset = 0;
    if (!g_init) p->se_status = IIAPI_ST_NOT_INITIALIZED;
    else if (!reg_has(e, K_ENV) || e->is_default) p->se_status = IIAPI_ST_INVALID_HANDLE;
    else if (p->se_paramID < IIAPI_EP_BASE || p->se_paramID > IIAPI_EP_TOP)
        p->se_status = IIAPI_ST_FAILURE;
    else if (!p->se_paramValue && p->se_paramID != IIAPI_EP_EVENT_FUNC &&
             p->se_paramID != IIAPI_EP_TRACE_FUNC && p->se_paramID != IIAPI_EP_PROMPT_FUNC)
        p->se_status = IIAPI_ST_FAILURE;
    else if (p->se_paramID == IIAPI_EP_DATE_FORMAT) {
        II_LONG v = *(II_LONG *)p->se_paramValue;
        p->se_status = IIAPI_ST_SUCCESS;
        if (v < IIAPI_EPV_DFRMT_US || v > IIAPI_EPV_DFRMT_ISO8601) p->se_status = IIAPI_ST_FAILURE;
        else e->fmt.date_format = v;
    } else if (p->se_paramID == IIAPI_EP_TIMEZONE) {
        const char *tz = p->se_paramValue;
        p->se_status = IIAPI_ST_FAILURE;
        if (sim_tz_lookup(tz, &offset) == 0) {
            e->fmt.tz_offset_minutes = offset;
            snprintf(e->fmt.tz_name, sizeof e->fmt.tz_name, "%s", tz);
            p->se_status = IIAPI_ST_SUCCESS;
        }
    } else if (p->se_paramID == IIAPI_EP_EVENT_FUNC) {
        /* NULL is accepted and turns the callback off (as the real library). */
        e->event_func = (IIAPI_EVENT_CALLBACK)p->se_paramValue;
        p->se_status = IIAPI_ST_SUCCESS;
    } else {
        p->se_status = IIAPI_ST_SUCCESS; /* accepted; no effect on the simulation */
    }
    pthread_mutex_unlock(&g_lock);
}

/* ------------------------------------------------------------------ */
/* formatData / convertData */

EXPORT void IIapi_formatData(IIAPI_FORMATPARM *p)
{
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    env_t *e = p->fd_envHandle ? p->fd_envHandle : g_default_env;
    if (!g_init) p->fd_status = IIAPI_ST_NOT_INITIALIZED;
    else if (!reg_has(e, K_ENV)) p->fd_status = IIAPI_ST_INVALID_HANDLE;
    else {
        sim_datefmt fmt = e->fmt;
        p->fd_status = sim_convert(&fmt, &p->fd_srcDesc, &p->fd_srcValue, &p->fd_dstDesc,
                                   &p->fd_dstValue);
    }
    pthread_mutex_unlock(&g_lock);
}

EXPORT void IIapi_convertData(IIAPI_CONVERTPARM *p)
{
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    if (!g_init) p->cv_status = IIAPI_ST_NOT_INITIALIZED;
    else
        p->cv_status = sim_convert(&g_proc_fmt, &p->cv_srcDesc, &p->cv_srcValue,
                                   &p->cv_dstDesc, &p->cv_dstValue);
    pthread_mutex_unlock(&g_lock);
}

/* ------------------------------------------------------------------ */
/* getErrorInfo */

EXPORT void IIapi_getErrorInfo(IIAPI_GETEINFOPARM *p)
{
    if (!p) return;
    pthread_mutex_lock(&g_lock);
    hdr_t *h = p->ge_errorHandle;
    if (!g_init) p->ge_status = IIAPI_ST_NOT_INITIALIZED;
    else if (!h) p->ge_status = IIAPI_ST_NO_DATA; /* no handle, no errors (real library) */
    else if (!reg_has(h, 0)) p->ge_status = IIAPI_ST_INVALID_HANDLE;
    else {
        err_t *e = h->errs;
        for (int i = 0; e && i < h->nread; i++) e = e->next;
        if (!e) p->ge_status = IIAPI_ST_NO_DATA;
        else {
            h->nread++;
            p->ge_type = e->type;
            memcpy(p->ge_SQLSTATE, e->sqlstate, sizeof p->ge_SQLSTATE);
            p->ge_errorCode = e->code;
            p->ge_message = e->msg;
            p->ge_serverInfoAvail = e->server;
            p->ge_serverInfo = NULL;
            if (e->server) {
                memset(&h->svr, 0, sizeof h->svr);
                h->svr.svr_id_error = e->code;
                h->svr.svr_local_error = e->code;
                h->svr.svr_severity = 0;
                p->ge_serverInfo = &h->svr;
            }
            p->ge_status = IIAPI_ST_SUCCESS;
        }
    }
    pthread_mutex_unlock(&g_lock);
}

/* ------------------------------------------------------------------ */
/* connect */

typedef struct {
    char host[256];
    char port[16];
    char user[256];
    char password[256];
    char db[256];
} target_t;

static int copy_field(char *dst, size_t cap, const char *s, size_t n)
{
    while (n > 0 && isspace((unsigned char)*s)) s++, n--;
    while (n > 0 && isspace((unsigned char)s[n - 1])) n--;
    if (n >= cap) return -1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

/* Ingres symbolic ports: "XY" or "XYn" -> numeric (GCC rule). Returns 0, or the
 * CL error GCC's TCP driver reports: a subport over 15 (E_CLFE10), anything
 * else that is no port (E_CLFE0C). */
static II_LONG port_number(const char *s, long *out)
{
    char *end = NULL;
    if (isdigit((unsigned char)s[0])) {
        *out = strtol(s, &end, 10);
        return *end || *out <= 0 || *out > 65535 ? E_CLFE0C_BS_BADPORT : 0;
    }
    if (!isalpha((unsigned char)s[0]) || !isalnum((unsigned char)s[1]))
        return E_CLFE0C_BS_BADPORT;
    long sub = 0;
    if (s[2]) {
        if (!isdigit((unsigned char)s[2])) return E_CLFE0C_BS_BADPORT;
        sub = strtol(s + 2, &end, 10);
        if (*end) return E_CLFE0C_BS_BADPORT;
        if (sub > 15) return E_CLFE10_BS_SUBPORT_RANGE;
    }
    int a = toupper((unsigned char)s[0]), b = toupper((unsigned char)s[1]);
    *out = ((sub > 7 ? 2L : 1L) << 14) | ((long)(a & 0x1f) << 9) | ((long)(b & 0x3f) << 3) |
           (sub & 7);
    return 0;
}

static const char *cl_message(II_LONG code)
{
    switch (code) {
    case E_GC0025_NM_SRVR_ID_ERR: return MSG_GC0025;
    case E_GC012A_GCN_BAD_NODE: return MSG_GC012A;
    case E_GC012E_GCN_BAD_AUTH: return MSG_GC012E;
    case E_CLFE0B_BS_NOHOST: return MSG_CLFE0B;
    case E_CLFE0C_BS_BADPORT: return MSG_CLFE0C;
    case E_CLFE10_BS_SUBPORT_RANGE: return MSG_CLFE10;
    default: return MSG_CLFE05;
    }
}

/* "@host[,protocol],port[,port...][user,password]::database[/class]", as the
 * real library takes it apart (checked against Actian Client 1.5): anything
 * that is not such a dynamic vnode (a local database, a vnode name, another
 * protocol, no port) needs the name server, which the simulator does not have
 * and which is not running: E_GC0025, as the real client says without one.
 * Returns 0 or the error code. */
static II_LONG parse_target(const char *t, target_t *o)
{
    memset(o, 0, sizeof *o);
    const char *sep = t ? strstr(t, "::") : NULL;
    if (!sep || t[0] != '@') return E_GC0025_NM_SRVR_ID_ERR;
    const char *db = sep + 2, *slash = strchr(db, '/');
    if (copy_field(o->db, sizeof o->db, db, slash ? (size_t)(slash - db) : strlen(db)) < 0)
        return E_GC012A_GCN_BAD_NODE;
    const char *node = t + 1, *end = sep, *br = memchr(node, '[', (size_t)(end - node));
    if (br) {
        const char *close = memchr(br, ']', (size_t)(end - br));
        if (!close || close + 1 != end) return E_GC012E_GCN_BAD_AUTH;
        const char *comma = memchr(br, ',', (size_t)(close - br));
        const char *user_end = comma ? comma : close;
        if (copy_field(o->user, sizeof o->user, br + 1, (size_t)(user_end - br - 1)) < 0 ||
            (comma && copy_field(o->password, sizeof o->password, comma + 1,
                                 (size_t)(close - comma - 1)) < 0))
            return E_GC012E_GCN_BAD_AUTH;
        end = br;
    }
    /* host, then [protocol,] port, then more ports to try: only the first is used */
    char parts[3][256] = {{0}};
    int np = 0;
    for (const char *s = node; np < 3;) {
        const char *c = memchr(s, ',', (size_t)(end - s));
        const char *e = c ? c : end;
        if (copy_field(parts[np++], sizeof parts[0], s, (size_t)(e - s)) < 0)
            return E_GC012A_GCN_BAD_NODE;
        if (!c) break;
        s = c + 1;
    }
    if (np < 2) return E_GC0025_NM_SRVR_ID_ERR; /* no port: the name server would know */
    if (!parts[0][0]) return E_GC012A_GCN_BAD_NODE;
    const char *proto = np == 3 ? parts[1] : "tcp_ip";
    const char *port = np == 3 ? parts[2] : parts[1];
    if (strcasecmp(proto, "tcp_ip") != 0 && strcasecmp(proto, "tcp_ipv4") != 0 &&
        strcasecmp(proto, "tcp_ipv6") != 0)
        return E_GC0025_NM_SRVR_ID_ERR;
    snprintf(o->host, sizeof o->host, "%s", parts[0]);
    long num = 0;
    II_LONG bad = port_number(port, &num);
    if (bad) return bad;
    snprintf(o->port, sizeof o->port, "%ld", num);
    return 0;
}

static void put_str(unsigned char **w, const char *s)
{
    size_t n = strlen(s);
    if (n > 65535) n = 65535;
    (*w)[0] = (unsigned char)(n >> 8);
    (*w)[1] = (unsigned char)n;
    memcpy(*w + 2, s, n);
    *w += 2 + n;
}

static const char *os_user(void)
{
    const char *u = getenv("USER");
    if (u && *u) return u;
    struct passwd *pw = getpwuid(getuid());
    return pw ? pw->pw_name : "ingres";
}

/* Starts the non-blocking TCP connect; returns 0, or the error for the
 * application: an unknown host (E_CLFE0B), or a connect that failed at once
 * (E_CLFE05, as when it fails later: finish_tcp_connect). */
static II_LONG tcp_start(conn_t *c, const target_t *t)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(t->host, t->port, &hints, &ai) != 0 || !ai) return E_CLFE0B_BS_NOHOST;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
    if (fd < 0) {
        freeaddrinfo(ai);
        return E_CLFE05_BS_CONNECT_ERR;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    freeaddrinfo(ai);
    if (rc < 0 && err != EINPROGRESS) {
        close(fd);
        return E_CLFE05_BS_CONNECT_ERR;
    }
    c->fd = fd;
    c->st = CS_CONNECTING;
    return 0;
}

static conn_t *conn_new(env_t *env)
{
    conn_t *c = hnew(sizeof *c, K_CONN);
    if (!c) return NULL;
    c->fd = -1;
    c->st = CS_IDLE;
    c->env = env;
    env->nconns++;
    return c;
}

/* The connection types version 2 introduced; earlier versions have no co_type. */
#define IIAPI_CT_SQL 1
#define IIAPI_CT_NS 3

EXPORT void IIapi_connect(IIAPI_CONNPARM *p)
{
    if (!p) return;
    /* As apiconn.c: the handles are outputs from here on, whatever happens. */
    void *h = p->co_connHandle;
    p->co_connHandle = NULL;
    p->co_tranHandle = NULL;
    BEGIN(&p->co_genParm);
    env_t *env = g_default_env;
    conn_t *c = NULL;
    if (h && reg_has(h, K_ENV)) env = h;
    else if (h && reg_has(h, K_CONN) && ((conn_t *)h)->st == CS_IDLE) c = h, env = c->env;
    else if (h) {
        complete(&cl, &p->co_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    /* From version 2 on the type must be given (apiconn.c): anything else
     * fails inside the call with no error handle, and a connection handle
     * created for the call is deleted again. */
    if (env->version >= 2 && p->co_type != IIAPI_CT_SQL && p->co_type != IIAPI_CT_NS) {
        complete(&cl, &p->co_genParm, IIAPI_ST_FAILURE, NULL);
        goto out;
    }
    if (!c) c = conn_new(env);
    if (!c) {
        complete(&cl, &p->co_genParm, IIAPI_ST_OUT_OF_MEMORY, NULL);
        goto out;
    }
    err_clear(&c->h);
    p->co_connHandle = c;
    target_t t;
    /* A name-server connection needs a name server: the simulator has none. */
    II_LONG code = env->version >= 2 && p->co_type == IIAPI_CT_NS
                       ? E_GC0025_NM_SRVR_ID_ERR
                       : parse_target(p->co_target, &t);
    if (code) {
        conn_failed(c, code, cl_message(code));
        complete(&cl, &p->co_genParm, IIAPI_ST_FAILURE, &c->h);
        goto out;
    }
    const char *user = p->co_username && *p->co_username ? p->co_username
                       : t.user[0]                       ? t.user
                                                         : os_user();
    const char *pw = p->co_password ? p->co_password : t.password;
    size_t n = 6 + strlen(user) + strlen(pw) + strlen(t.db);
    c->hello = malloc(n);
    if (!c->hello) {
        complete(&cl, &p->co_genParm, IIAPI_ST_OUT_OF_MEMORY, NULL);
        goto out;
    }
    unsigned char *w = c->hello;
    put_str(&w, user);
    put_str(&w, pw);
    put_str(&w, t.db);
    c->hello_len = (size_t)(w - c->hello);
    snprintf(c->addr, sizeof c->addr, "%s:%s", t.host, t.port);
    code = tcp_start(c, &t);
    if (code) {
        /* An unknown host is known inside the call, as in the real library. */
        conn_failed(c, code, cl_message(code));
        if (code == E_CLFE0B_BS_NOHOST) complete(&cl, &p->co_genParm, IIAPI_ST_FAILURE, &c->h);
        else defer(&p->co_genParm, IIAPI_ST_FAILURE, &c->h);
        goto out;
    }
    long long deadline = p->co_timeout > 0 ? now_ms() + p->co_timeout : -1;
    start_read(c, OP_CONNECT, &p->co_genParm, p, NULL, deadline);
    END;
}

EXPORT void IIapi_setConnectParam(IIAPI_SETCONPRMPARM *p)
{
    if (!p) return;
    BEGIN(&p->sc_genParm);
    conn_t *c = p->sc_connHandle;
    if (!c) {
        c = conn_new(g_default_env);
        if (!c) {
            complete(&cl, &p->sc_genParm, IIAPI_ST_OUT_OF_MEMORY, NULL);
            goto out;
        }
        p->sc_connHandle = c;
    } else if (!reg_has(c, K_CONN)) {
        complete(&cl, &p->sc_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    err_clear(&c->h);
    if (c->st == CS_FAILED) {
        fail_with(&cl, &p->sc_genParm, &c->h, E_AP0001_CONNECTION_ABORTED, "08006", MSG_AP0001);
        goto out;
    }
    defer(&p->sc_genParm, IIAPI_ST_SUCCESS, NULL); /* accepted, not interpreted */
    END;
}

/* ------------------------------------------------------------------ */
/* disconnect / abort */

/* Fails what is pending on a connection that is going away. */
void fail_pending(conn_t *c, clist_t *cl)
{
    if (c->rd.kind != OP_NONE) {
        hdr_t *t = c->rd.st ? &c->rd.st->h : &c->h;
        err_local(t, E_AP0001_CONNECTION_ABORTED, "08006", MSG_AP0001);
        end_read(c, cl, IIAPI_ST_FAILURE, t);
    }
    for (evh_t *e = c->evhs; e; e = e->next) {
        if (e->st != ES_WAIT || !e->parm) continue;
        IIAPI_CATCHEVENTPARM *p = e->parm;
        e->parm = NULL;
        e->st = ES_CNCL;
        err_local(&e->h, E_AP0001_CONNECTION_ABORTED, "08006", MSG_AP0001);
        complete(cl, &p->ce_genParm, IIAPI_ST_FAILURE, &e->h);
    }
}

EXPORT void IIapi_disconnect(IIAPI_DISCONNPARM *p)
{
    if (!p) return;
    BEGIN(&p->dc_genParm);
    conn_t *c = p->dc_connHandle;
    if (!reg_has(c, K_CONN)) {
        complete(&cl, &p->dc_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    err_clear(&c->h);
    if (c->tran) {
        fail_with(&cl, &p->dc_genParm, &c->h, E_AP0003_ACTIVE_TRANSACTIONS, "25000",
                  MSG_AP0003);
        goto out;
    }
    if (c->evhs || c->cbq) {
        fail_with(&cl, &p->dc_genParm, &c->h, E_AP0005_ACTIVE_EVENTS, "25000",
                  MSG_AP0005);
        goto out;
    }
    fail_pending(c, &cl);
    if (c->st == CS_OPEN) conn_send(c, 'B', NULL, 0);
    defer(&p->dc_genParm, IIAPI_ST_SUCCESS, NULL);
    conn_free(c, &cl);
    END;
}

EXPORT void IIapi_abort(IIAPI_ABORTPARM *p)
{
    if (!p) return;
    BEGIN(&p->ab_genParm);
    conn_t *c = p->ab_connHandle;
    if (!reg_has(c, K_CONN)) {
        complete(&cl, &p->ab_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    if (c->st != CS_OPEN || c->fd < 0 || c->abort_gp) {
        fail_pending(c, &cl);
        defer(&p->ab_genParm, IIAPI_ST_SUCCESS, NULL);
        conn_free(c, &cl); /* closes the socket without a BYE */
        goto out;
    }
    /* As Actian's library (aip/apisqlc.c: ABORT in CONN or DBEV goes to DISC
     * through GCA_DISASSOC): a waiting getEvent fails at once (CBAB); every
     * other pending operation fails, and the abort completes, only once the
     * disconnect does (PEND, CBOK), which needs the peer: here, once the
     * server closes after the BYE. A half-open peer never does, so the abort
     * and what it left pending stay pending. */
    if (c->rd.kind == OP_GETEVENT) {
        err_local(&c->h, E_AP0001_CONNECTION_ABORTED, "08006", MSG_AP0001);
        end_read(c, &cl, IIAPI_ST_FAILURE, &c->h);
    }
    c->rpos = c->rlen = 0; /* replies no longer read */
    conn_send(c, 'B', NULL, 0);
    c->abort_gp = &p->ab_genParm;
    c->abort_owner = pthread_self();
    END;
}

/* ------------------------------------------------------------------ */
/* autocommit and queries */

EXPORT void IIapi_autocommit(IIAPI_AUTOPARM *p)
{
    if (!p) return;
    BEGIN(&p->ac_genParm);
    conn_t *c = p->ac_connHandle;
    tran_t *t = p->ac_tranHandle;
    if ((!c && !t) || (c && !reg_has(c, K_CONN)) || (t && !reg_has(t, K_TRAN))) {
        complete(&cl, &p->ac_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    if (c) err_clear(&c->h);
    if (t) err_clear(&t->h);
    if (!t) {
        if (c->tran) {
            fail_with(&cl, &p->ac_genParm, &c->h, E_AP0003_ACTIVE_TRANSACTIONS, "25000",
                      MSG_AP0003);
            goto out;
        }
        t = hnew(sizeof *t, K_TRAN);
        if (!t) {
            complete(&cl, &p->ac_genParm, IIAPI_ST_OUT_OF_MEMORY, NULL);
            goto out;
        }
        t->conn = c;
        t->autocommit = 1;
        c->tran = t;
        p->ac_tranHandle = t;
        defer(&p->ac_genParm, IIAPI_ST_SUCCESS, NULL);
        goto out;
    }
    if (t->nstmts > 0) {
        fail_with(&cl, &p->ac_genParm, &t->h, E_AP0004_ACTIVE_QUERIES, "25000",
                  MSG_AP0004);
        goto out;
    }
    t->conn->tran = NULL;
    forget_handle(&cl, &t->h);
    hfree(&t->h);
    p->ac_tranHandle = NULL;
    defer(&p->ac_genParm, IIAPI_ST_SUCCESS, NULL);
    END;
}

static int conn_busy(const conn_t *c)
{
    if (c->rd.kind != OP_NONE) return 1;
    for (const stmt_t *s = c->stmts; s; s = s->next)
        if (!s->done && !s->lost) return 1;
    return 0;
}

EXPORT void IIapi_query(IIAPI_QUERYPARM *p)
{
    if (!p) return;
    BEGIN(&p->qy_genParm);
    conn_t *c = p->qy_connHandle;
    tran_t *t = p->qy_tranHandle;
    if (!reg_has(c, K_CONN) || (t && (!reg_has(t, K_TRAN) || t->conn != c))) {
        complete(&cl, &p->qy_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    err_clear(&c->h);
    /* The order of apiquery.c: parameter checks fail on the connection handle
     * without creating anything; then the transaction and statement handles
     * are created and only then does the state machine refuse a busy or
     * failed connection: the application gets a statement handle it must
     * close (checked against Actian Client 1.5). */
    if (!p->qy_queryText) {
        fail_with(&cl, &p->qy_genParm, &c->h, E_AP0011_INVALID_PARAM_VALUE, "5000R",
                  MSG_AP0011);
        goto out;
    }
    if (p->qy_parameters) {
        fail_with(&cl, &p->qy_genParm, &c->h, E_AP0011_INVALID_PARAM_VALUE, "0A000",
                  "Query parameters (IIapi_putParms) are not supported by the OpenAPI "
                  "simulator.");
        goto out;
    }
    if (!t && c->tran) { /* one transaction per connection: name it or commit it */
        fail_with(&cl, &p->qy_genParm, &c->h, E_AP0003_ACTIVE_TRANSACTIONS, "25000",
                  MSG_AP0003);
        goto out;
    }
    int busy = conn_busy(c);
    if (!t) {
        t = hnew(sizeof *t, K_TRAN); /* implicit transaction, as the real API */
        if (!t) {
            complete(&cl, &p->qy_genParm, IIAPI_ST_OUT_OF_MEMORY, NULL);
            goto out;
        }
        t->conn = c;
        c->tran = t;
        p->qy_tranHandle = t;
    }
    stmt_t *s = hnew(sizeof *s, K_STMT);
    if (!s) {
        complete(&cl, &p->qy_genParm, IIAPI_ST_OUT_OF_MEMORY, NULL);
        goto out;
    }
    s->conn = c;
    s->tran = t;
    t->nstmts++;
    s->next = c->stmts;
    c->stmts = s;
    p->qy_stmtHandle = s;
    if (c->st != CS_OPEN || busy) {
        s->done = 1; /* nothing was sent: closing it reads nothing */
        if (c->st != CS_OPEN)
            fail_with(&cl, &p->qy_genParm, &s->h, E_AP0001_CONNECTION_ABORTED, "08006",
                      MSG_AP0001);
        else
            fail_with(&cl, &p->qy_genParm, &s->h, E_AP0006_INVALID_SEQUENCE, "5000R", MSG_AP0006);
        goto out;
    }
    size_t n = strlen(p->qy_queryText);
    unsigned char *buf = malloc(n + 4);
    if (!buf) abort();
    buf[0] = (unsigned char)(n >> 24);
    buf[1] = (unsigned char)(n >> 16);
    buf[2] = (unsigned char)(n >> 8);
    buf[3] = (unsigned char)n;
    memcpy(buf + 4, p->qy_queryText, n);
    int rc = conn_send(c, 'Q', buf, n + 4);
    free(buf);
    if (rc < 0) {
        conn_lost(c, &cl);
        err_local(&s->h, E_AP0001_CONNECTION_ABORTED, "08006", MSG_AP0001);
        defer(&p->qy_genParm, IIAPI_ST_FAILURE, &s->h);
        goto out;
    }
    defer(&p->qy_genParm, IIAPI_ST_SUCCESS, NULL);
    END;
}

/* Statement calls that read the response start a read on the connection. */
static int stmt_read(clist_t *cl, IIAPI_GENPARM *gp, stmt_t *s, enum opkind k, void *parm)
{
    conn_t *c = s->conn;
    if (s->lost || c->st != CS_OPEN) {
        fail_with(cl, gp, &s->h, E_AP0001_CONNECTION_ABORTED, "08006", MSG_AP0001);
        return -1;
    }
    if (c->rd.kind != OP_NONE) {
        fail_with(cl, gp, &s->h, E_AP0006_INVALID_SEQUENCE, "5000R", MSG_AP0006);
        return -1;
    }
    start_read(c, k, gp, parm, s, -1);
    return 0;
}

EXPORT void IIapi_getQueryInfo(IIAPI_GETQINFOPARM *p)
{
    if (!p) return;
    BEGIN(&p->gq_genParm);
    stmt_t *s = p->gq_stmtHandle;
    if (!reg_has(s, K_STMT)) {
        complete(&cl, &p->gq_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    err_clear(&s->h);
    if (s->done) {
        stmt_fill_qinfo(s, p);
        complete(&cl, &p->gq_genParm, s->ok ? IIAPI_ST_SUCCESS : IIAPI_ST_ERROR, &s->h);
        goto out;
    }
    stmt_read(&cl, &p->gq_genParm, s, OP_QINFO, p);
    END;
}

/* ------------------------------------------------------------------ */
/* event handles: getDescriptor / getColumns / cancel / close */

static void evh_descriptor(clist_t *cl, evh_t *e, IIAPI_GETDESCRPARM *p)
{
    if (e->st != ES_DONE) {
        fail_with(cl, &p->gd_genParm, &e->h, E_AP0006_INVALID_SEQUENCE, "5000R", MSG_AP0006);
        return;
    }
    if (e->text_done) {
        p->gd_descriptorCount = 0;
        p->gd_descriptor = NULL;
        complete(cl, &p->gd_genParm, IIAPI_ST_NO_DATA, NULL);
        return;
    }
    memset(&e->desc, 0, sizeof e->desc);
    e->desc.ds_dataType = IIAPI_VCH_TYPE;
    e->desc.ds_nullable = 0;
    e->desc.ds_length = (II_UINT2)(2 + e->cb->tlen);
    e->desc.ds_columnType = IIAPI_COL_TUPLE;
    p->gd_descriptorCount = 1;
    p->gd_descriptor = &e->desc;
    complete(cl, &p->gd_genParm, IIAPI_ST_SUCCESS, NULL);
}

static void evh_columns(clist_t *cl, evh_t *e, IIAPI_GETCOLPARM *p)
{
    if (e->st != ES_DONE) {
        fail_with(cl, &p->gc_genParm, &e->h, E_AP0006_INVALID_SEQUENCE, "5000R", MSG_AP0006);
        return;
    }
    if (e->text_done) {
        p->gc_rowsReturned = 0;
        p->gc_moreSegments = 0;
        complete(cl, &p->gc_genParm, IIAPI_ST_NO_DATA, NULL);
        return;
    }
    if (p->gc_columnCount != 1 || p->gc_rowCount < 1 || !p->gc_columnData ||
        !p->gc_columnData[0].dv_value) {
        fail_with(cl, &p->gc_genParm, &e->h, E_AP0010_INVALID_COLUMN_COUNT, "5000R",
                  MSG_AP0010);
        return;
    }
    /* As the real API: the 2-byte length and the text are copied without
     * looking at the buffer size; the caller provides at least 258 bytes. */
    IIAPI_DATAVALUE *dv = &p->gc_columnData[0];
    uint16_t n = e->cb->tlen;
    memcpy(dv->dv_value, &n, 2);
    memcpy((unsigned char *)dv->dv_value + 2, e->cb->text, n);
    dv->dv_null = 0;
    dv->dv_length = (II_UINT2)(n + 2);
    p->gc_rowsReturned = 1;
    p->gc_moreSegments = 0;
    e->text_done = 1;
    complete(cl, &p->gc_genParm, IIAPI_ST_SUCCESS, NULL);
}

EXPORT void IIapi_getDescriptor(IIAPI_GETDESCRPARM *p)
{
    if (!p) return;
    BEGIN(&p->gd_genParm);
    void *h = p->gd_stmtHandle;
    if (reg_has(h, K_EVT)) {
        evh_t *e = h;
        err_clear(&e->h);
        if (e->conn->st == CS_FAILED)
            fail_with(&cl, &p->gd_genParm, &e->h, E_AP0001_CONNECTION_ABORTED, "08006",
                      MSG_AP0001);
        else evh_descriptor(&cl, e, p);
        goto out;
    }
    if (!reg_has(h, K_STMT)) {
        complete(&cl, &p->gd_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    stmt_t *s = h;
    err_clear(&s->h);
    if (s->have_header || s->done) {
        stmt_fill_desc(s, p);
        complete(&cl, &p->gd_genParm, IIAPI_ST_SUCCESS, &s->h);
        goto out;
    }
    stmt_read(&cl, &p->gd_genParm, s, OP_DESC, p);
    END;
}

EXPORT void IIapi_getColumns(IIAPI_GETCOLPARM *p)
{
    if (!p) return;
    BEGIN(&p->gc_genParm);
    void *h = p->gc_stmtHandle;
    if (reg_has(h, K_EVT)) {
        evh_t *e = h;
        err_clear(&e->h);
        if (e->conn->st == CS_FAILED)
            fail_with(&cl, &p->gc_genParm, &e->h, E_AP0001_CONNECTION_ABORTED, "08006",
                      MSG_AP0001);
        else evh_columns(&cl, e, p);
        goto out;
    }
    if (!reg_has(h, K_STMT)) {
        complete(&cl, &p->gc_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    stmt_t *s = h;
    err_clear(&s->h);
    p->gc_rowsReturned = 0;
    p->gc_moreSegments = 0;
    if (s->done) {
        complete(&cl, &p->gc_genParm, IIAPI_ST_NO_DATA, NULL);
        goto out;
    }
    if (!s->have_header || p->gc_columnCount != s->ncols || p->gc_rowCount < 1 ||
        !p->gc_columnData) {
        fail_with(&cl, &p->gc_genParm, &s->h, E_AP0010_INVALID_COLUMN_COUNT, "5000R",
                  MSG_AP0010);
        goto out;
    }
    stmt_read(&cl, &p->gc_genParm, s, OP_COLS, p);
    END;
}

EXPORT void IIapi_cancel(IIAPI_CANCELPARM *p)
{
    if (!p) return;
    BEGIN(&p->cn_genParm);
    void *h = p->cn_stmtHandle;
    if (reg_has(h, K_EVT)) {
        evh_t *e = h;
        err_clear(&e->h);
        if (e->st == ES_DONE) {
            fail_with(&cl, &p->cn_genParm, &e->h, E_AP0008_QUERY_DONE, "5000R",
                      MSG_AP0008);
        } else if (e->st == ES_CNCL) {
            complete(&cl, &p->cn_genParm, IIAPI_ST_WARNING, NULL);
        } else {
            e->st = ES_CNCL;
            IIAPI_CATCHEVENTPARM *cp = e->parm;
            e->parm = NULL;
            if (cp) {
                err_local(&e->h, E_AP0009_QUERY_CANCELLED, "5000R", MSG_AP0009);
                complete(&cl, &cp->ce_genParm, IIAPI_ST_FAILURE, &e->h);
            }
            complete(&cl, &p->cn_genParm, IIAPI_ST_SUCCESS, NULL);
        }
        goto out;
    }
    if (!reg_has(h, K_STMT)) {
        complete(&cl, &p->cn_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    stmt_t *s = h;
    err_clear(&s->h);
    if (s->done || s->lost) {
        fail_with(&cl, &p->cn_genParm, &s->h, E_AP0008_QUERY_DONE, "5000R",
                  MSG_AP0008);
        goto out;
    }
    /* The wire has no interrupt: the response is drained and the reading
     * call (now or next) completes with E_AP0009. */
    s->cancelled = 1;
    defer(&p->cn_genParm, IIAPI_ST_SUCCESS, NULL);
    END;
}

EXPORT void IIapi_close(IIAPI_CLOSEPARM *p)
{
    if (!p) return;
    BEGIN(&p->cl_genParm);
    void *h = p->cl_stmtHandle;
    if (reg_has(h, K_EVT)) {
        evh_t *e = h;
        err_clear(&e->h);
        if (e->st == ES_WAIT) {
            fail_with(&cl, &p->cl_genParm, &e->h, E_AP0007_INCOMPLETE_QUERY, "5000R",
                      MSG_AP0007);
            goto out;
        }
        conn_t *c = e->conn;
        evh_free(e, &cl);
        dispatch_events(c, &cl);
        complete(&cl, &p->cl_genParm, IIAPI_ST_SUCCESS, NULL);
        goto out;
    }
    if (!reg_has(h, K_STMT)) {
        complete(&cl, &p->cl_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    stmt_t *s = h;
    err_clear(&s->h);
    if (s->done || s->lost || s->conn->st != CS_OPEN) {
        stmt_free(s, &cl);
        complete(&cl, &p->cl_genParm, IIAPI_ST_SUCCESS, NULL);
        goto out;
    }
    stmt_read(&cl, &p->cl_genParm, s, OP_CLOSE, p);
    END;
}

/* ------------------------------------------------------------------ */
/* catchEvent / getEvent */

static int set_filter(char **slot, const char *v)
{
    free(*slot);
    *slot = NULL;
    if (!v) return 0;
    *slot = strdup(v);
    return *slot ? 0 : -1;
}

EXPORT void IIapi_catchEvent(IIAPI_CATCHEVENTPARM *p)
{
    if (!p) return;
    BEGIN(&p->ce_genParm);
    conn_t *c = p->ce_connHandle;
    evh_t *e = p->ce_eventHandle;
    if (!reg_has(c, K_CONN) || (e && (!reg_has(e, K_EVT) || e->conn != c))) {
        complete(&cl, &p->ce_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    if (e) err_clear(&e->h);
    hdr_t *eh = e ? &e->h : &c->h;
    if (c->st != CS_OPEN) {
        fail_with(&cl, &p->ce_genParm, eh, E_AP0001_CONNECTION_ABORTED, "08006", MSG_AP0001);
        goto out;
    }
    if (e && e->st == ES_WAIT) {
        /* As the real state machine: the new parameter block replaces the
         * waiting one, which will therefore never complete. */
        e->parm = NULL;
        fail_with(&cl, &p->ce_genParm, &e->h, E_AP0006_INVALID_SEQUENCE, "5000R", MSG_AP0006);
        goto out;
    }
    if (!e) {
        e = hnew(sizeof *e, K_EVT);
        if (!e) {
            complete(&cl, &p->ce_genParm, IIAPI_ST_OUT_OF_MEMORY, NULL);
            goto out;
        }
        e->conn = c;
        p->ce_eventHandle = e;
    } else {
        evh_release_cb(e);
        for (evh_t **pp = &c->evhs; *pp; pp = &(*pp)->next) /* unlink: re-armed = newest */
            if (*pp == e) {
                *pp = e->next;
                break;
            }
    }
    e->next = NULL;
    evh_t **tail = &c->evhs;
    while (*tail) tail = &(*tail)->next;
    *tail = e;
    if (set_filter(&e->sel_name, p->ce_selectEventName) < 0 ||
        set_filter(&e->sel_owner, p->ce_selectEventOwner) < 0) {
        complete(&cl, &p->ce_genParm, IIAPI_ST_OUT_OF_MEMORY, NULL);
        goto out;
    }
    e->st = ES_WAIT;
    e->parm = p;
    e->text_done = 1;
    dispatch_events(c, &cl); /* queued events complete the catch without I/O */
    END;
}

EXPORT void IIapi_getEvent(IIAPI_GETEVENTPARM *p)
{
    if (!p) return;
    BEGIN(&p->gv_genParm);
    conn_t *c = p->gv_connHandle;
    if (!reg_has(c, K_CONN)) {
        complete(&cl, &p->gv_genParm, IIAPI_ST_INVALID_HANDLE, NULL);
        goto out;
    }
    err_clear(&c->h);
    if (c->st != CS_OPEN) {
        fail_with(&cl, &p->gv_genParm, &c->h, E_AP0001_CONNECTION_ABORTED, "08006", MSG_AP0001);
        goto out;
    }
    if (conn_busy(c)) {
        fail_with(&cl, &p->gv_genParm, &c->h, E_AP0006_INVALID_SEQUENCE, "5000R", MSG_AP0006);
        goto out;
    }
    long long deadline = p->gv_timeout < 0 ? -1 : now_ms() + p->gv_timeout;
    start_read(c, OP_GETEVENT, &p->gv_genParm, p, NULL, deadline);
    END;
}

/* ------------------------------------------------------------------ */
/* everything else: not simulated */

static void unsupported(IIAPI_GENPARM *gp, const char *name)
{
    if (!gp) return;
    BEGIN(gp);
    hdr_t *o = orphan_errors(NULL);
    if (o)
        err_local(o, E_AP0011_INVALID_PARAM_VALUE, "0A000",
                  "%s is not supported by the OpenAPI simulator.", name);
    complete(&cl, gp, IIAPI_ST_FAILURE, o);
    END;
}

#define UNSUPPORTED(fn)                                                        \
    EXPORT void fn(void *p)                                                    \
    {                                                                          \
        unsupported(p ? &((IIAPI_ANY_ASYNC_PARM *)p)->genParm : NULL, #fn);    \
    }

UNSUPPORTED(IIapi_batch)
UNSUPPORTED(IIapi_commit)
UNSUPPORTED(IIapi_getCopyMap)
UNSUPPORTED(IIapi_modifyConnect)
UNSUPPORTED(IIapi_position)
UNSUPPORTED(IIapi_prepareCommit)
UNSUPPORTED(IIapi_putColumns)
UNSUPPORTED(IIapi_putParms)
UNSUPPORTED(IIapi_rollback)
UNSUPPORTED(IIapi_savePoint)
UNSUPPORTED(IIapi_scroll)
UNSUPPORTED(IIapi_setDescriptor)
UNSUPPORTED(IIapi_xaCommit)
UNSUPPORTED(IIapi_xaStart)
UNSUPPORTED(IIapi_xaEnd)
UNSUPPORTED(IIapi_xaPrepare)
UNSUPPORTED(IIapi_xaRollback)

EXPORT void IIapi_getColumnInfo(IIAPI_GETCOLINFOPARM *p)
{
    if (p) p->gi_status = IIAPI_ST_FAILURE; /* not simulated */
}

EXPORT void IIapi_registerXID(IIAPI_REGXIDPARM *p)
{
    if (p) p->rg_status = IIAPI_ST_FAILURE; /* not simulated */
}

EXPORT void IIapi_releaseXID(IIAPI_RELXIDPARM *p)
{
    if (p) p->rl_status = IIAPI_ST_FAILURE; /* not simulated */
}
