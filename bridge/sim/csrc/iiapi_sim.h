/*
 * OpenAPI simulator: the public types of the Ingres OpenAPI (iiapi.h), laid
 * out exactly as pyngres 0.5.0 declares them in IIAPI_PARM.py, plus the
 * internal declarations shared by the simulator's translation units.
 *
 * Only the types the simulator touches are spelled out field by field; the
 * parameter blocks of unsupported functions are only used through their
 * leading IIAPI_GENPARM (or status field), so they are declared partially.
 */
#ifndef IIAPI_SIM_H
#define IIAPI_SIM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* ---- iiapidep.h scalar types, as pyngres declares them ---- */
typedef int II_BOOL;
typedef char II_CHAR;
typedef int II_INT;
typedef short II_INT2;
typedef int II_INT4;
typedef long long II_INT8;
typedef int II_LONG;
typedef void *II_PTR;
typedef unsigned short II_UINT2;
typedef unsigned int II_UINT4;
typedef unsigned long long II_UINT8;
typedef unsigned int II_ULONG;
typedef II_INT2 IIAPI_DT_ID;
typedef II_ULONG IIAPI_QUERYTYPE;
typedef II_ULONG IIAPI_STATUS;
typedef void (*IIAPI_CALLBACK)(II_PTR closure, II_PTR parmBlock);

/* ---- constants (iiapi.h) ---- */
#define IIAPI_ST_SUCCESS 0u
#define IIAPI_ST_MESSAGE 1u
#define IIAPI_ST_WARNING 2u
#define IIAPI_ST_NO_DATA 3u
#define IIAPI_ST_ERROR 4u
#define IIAPI_ST_FAILURE 5u
#define IIAPI_ST_NOT_INITIALIZED 6u
#define IIAPI_ST_INVALID_HANDLE 7u
#define IIAPI_ST_OUT_OF_MEMORY 8u

#define IIAPI_GE_ERROR 1
#define IIAPI_GE_WARNING 2
#define IIAPI_GE_MESSAGE 3

#define IIAPI_DTE_TYPE 3
#define IIAPI_CHA_TYPE 20
#define IIAPI_VCH_TYPE 21
#define IIAPI_VBYTE_TYPE 24
#define IIAPI_NVCH_TYPE 27
#define IIAPI_INT_TYPE 30
#define IIAPI_CHR_TYPE 32
#define IIAPI_TXT_TYPE 37
#define IIAPI_COL_TUPLE 0

#define IIAPI_EP_DATE_FORMAT 19
#define IIAPI_EP_TRACE_FUNC 25
#define IIAPI_EP_PROMPT_FUNC 26
#define IIAPI_EP_EVENT_FUNC 27
#define IIAPI_EP_TIMEZONE 20
#define IIAPI_EP_BASE 1
#define IIAPI_EP_TOP 29
#define IIAPI_EPV_DFRMT_US 0
#define IIAPI_EPV_DFRMT_ISO4 9
#define IIAPI_EPV_DFRMT_ISO8601 13

#define IIAPI_GQ_ROW_COUNT 0x0001u
#define IIAPI_GQF_FAIL 0x0001u

#define IIAPI_QT_QUERY 0u
#define IIAPI_LEVEL_5 5

#define IIAPI_DTE_LEN 12
#define II_SQLSTATE_LEN 5
#define IIAPI_TBLKEYSZ 8
#define IIAPI_OBJKEYSZ 16

/* Error codes: E_AP_MASK = 201 * 0x10000 (iiapi.h); GCF errors = 12 * 0x10000. */
#define E_AP_MASK (201 * 0x10000)
#define E_AP0001_CONNECTION_ABORTED (E_AP_MASK + 0x0001)
#define E_AP0003_ACTIVE_TRANSACTIONS (E_AP_MASK + 0x0003)
#define E_AP0004_ACTIVE_QUERIES (E_AP_MASK + 0x0004)
#define E_AP0005_ACTIVE_EVENTS (E_AP_MASK + 0x0005)
#define E_AP0006_INVALID_SEQUENCE (E_AP_MASK + 0x0006)
#define E_AP0007_INCOMPLETE_QUERY (E_AP_MASK + 0x0007)
#define E_AP000E_INVALID_CONNECT_PARM (E_AP_MASK + 0x000E)
#define E_AP0008_QUERY_DONE (E_AP_MASK + 0x0008)
#define E_AP0009_QUERY_CANCELLED (E_AP_MASK + 0x0009)
#define E_AP0010_INVALID_COLUMN_COUNT (E_AP_MASK + 0x0010)
#define E_AP0011_INVALID_PARAM_VALUE (E_AP_MASK + 0x0011)
/* ge_message of the errors the library raises itself: the texts of Ingres'
 * message file (files/english/slow_v4.mnx of an Actian Client 1.5), as the
 * real library reports them. */
#define MSG_AP0001 "The connection to the server has been aborted."
#define MSG_AP0003 "The requested operation cannot be performed with active transactions."
#define MSG_AP0004 "The requested operation cannot be performed with active queries."
#define MSG_AP0005 "The requested operation cannot be performed with active event processing"
#define MSG_AP0006 "API function cannot be called in the current state."
#define MSG_AP0007 "Query cannot be closed in the current state, it may only be cancelled."
#define MSG_AP0008 "Query has completed or is completing and may not be cancelled."
#define MSG_AP0009 "Query cancelled."
#define MSG_AP000E "A connection parameter or value was rejected by the server."
#define MSG_AP0010 "Invalid number of columns or parameters specified."
#define MSG_AP0011 "Invalid parameter value."
#define MSG_GC0025 \
    "Unable to connect to Name Server: Blank or incorrect Name Server ID.\n" \
    " The Name Server may not be running. Check the status of your installation."
#define MSG_GC0021 "Requested association partner is unavailable"
#define MSG_GC012A \
    "User supplied database is not formatted properly. Format for node list is one of " \
    "the following: @host,port or @host,protocol,port[,port...]. If protocol is omitted, " \
    "default protocl is used."
#define MSG_GC012E \
    "User supplied database is not formatted properly. Format for authorization in node " \
    "is: [usr,pwd]."
#define MSG_CLFE05 "Unable to make outgoing connection."
#define MSG_CLFE0C "Port name malformed or illegal."
#define MSG_CLFE07 "Read from peer process failed; it may have exited."
#define MSG_CLFE0B "Host name unknown or illegal."
#define MSG_CLFE10 "Subport exceeds range of [0,15]"

#define E_GCF_MASK (12 * 0x10000)
#define E_GC0025_NM_SRVR_ID_ERR (E_GCF_MASK + 0x0025)
#define E_GC012A_GCN_BAD_NODE (E_GCF_MASK + 0x012A)
#define E_GC012E_GCN_BAD_AUTH (E_GCF_MASK + 0x012E)
/* Errors of the Ingres CL (facility 1), as GCC's TCP driver reports them. */
#define E_CLFE05_BS_CONNECT_ERR 0x1FE05
#define E_CLFE07_BS_READ_ERR 0x1FE07
#define E_CLFE0B_BS_NOHOST 0x1FE0B
#define E_CLFE0C_BS_BADPORT 0x1FE0C
#define E_CLFE10_BS_SUBPORT_RANGE 0x1FE10
#define E_GC0021_NO_PARTNER (E_GCF_MASK + 0x0021)

/* ---- structures (IIAPI_PARM.py) ---- */
typedef struct {
    II_PTR gp_callback;
    II_PTR gp_closure;
    II_BOOL gp_completed;
    IIAPI_STATUS gp_status;
    II_PTR gp_errorHandle;
} IIAPI_GENPARM;

typedef struct {
    IIAPI_DT_ID ds_dataType;
    II_BOOL ds_nullable;
    II_UINT2 ds_length;
    II_INT2 ds_precision;
    II_INT2 ds_scale;
    II_INT2 ds_columnType;
    char *ds_columnName;
} IIAPI_DESCRIPTOR;

typedef struct {
    II_BOOL dv_null;
    II_UINT2 dv_length;
    II_PTR dv_value;
} IIAPI_DATAVALUE;

typedef struct {
    II_LONG svr_id_error;
    II_LONG svr_local_error;
    II_LONG svr_id_server;
    II_LONG svr_server_type;
    II_LONG svr_severity;
    II_INT2 svr_parmCount;
    IIAPI_DESCRIPTOR *svr_parmDescr;
    IIAPI_DATAVALUE *svr_parmValue;
} IIAPI_SVR_ERRINFO;

typedef struct { IIAPI_GENPARM ab_genParm; II_PTR ab_connHandle; } IIAPI_ABORTPARM;
typedef struct {
    IIAPI_GENPARM ac_genParm;
    II_PTR ac_connHandle;
    II_PTR ac_tranHandle;
} IIAPI_AUTOPARM;
typedef struct { IIAPI_GENPARM cn_genParm; II_PTR cn_stmtHandle; } IIAPI_CANCELPARM;
typedef struct {
    IIAPI_GENPARM ce_genParm;
    II_PTR ce_connHandle;
    char *ce_selectEventName;
    char *ce_selectEventOwner;
    II_PTR ce_eventHandle;
    char *ce_eventName;
    char *ce_eventOwner;
    char *ce_eventDB;
    IIAPI_DATAVALUE ce_eventTime;
    II_BOOL ce_eventInfoAvail;
} IIAPI_CATCHEVENTPARM;
typedef struct { IIAPI_GENPARM cl_genParm; II_PTR cl_stmtHandle; } IIAPI_CLOSEPARM;
typedef struct {
    IIAPI_GENPARM co_genParm;
    char *co_target;
    char *co_username;
    char *co_password;
    II_LONG co_timeout;
    II_PTR co_connHandle;
    II_PTR co_tranHandle;
    II_LONG co_sizeAdvise;
    II_LONG co_apiLevel;
    II_LONG co_type;
} IIAPI_CONNPARM;
typedef struct {
    IIAPI_DESCRIPTOR cv_srcDesc;
    IIAPI_DATAVALUE cv_srcValue;
    IIAPI_DESCRIPTOR cv_dstDesc;
    IIAPI_DATAVALUE cv_dstValue;
    IIAPI_STATUS cv_status;
} IIAPI_CONVERTPARM;
typedef struct { IIAPI_GENPARM dc_genParm; II_PTR dc_connHandle; } IIAPI_DISCONNPARM;
typedef struct {
    II_PTR fd_envHandle;
    IIAPI_DESCRIPTOR fd_srcDesc;
    IIAPI_DATAVALUE fd_srcValue;
    IIAPI_DESCRIPTOR fd_dstDesc;
    IIAPI_DATAVALUE fd_dstValue;
    IIAPI_STATUS fd_status;
} IIAPI_FORMATPARM;
typedef struct {
    IIAPI_GENPARM gc_genParm;
    II_PTR gc_stmtHandle;
    II_INT2 gc_rowCount;
    II_INT2 gc_columnCount;
    IIAPI_DATAVALUE *gc_columnData;
    II_INT2 gc_rowsReturned;
    II_BOOL gc_moreSegments;
} IIAPI_GETCOLPARM;
typedef struct {
    II_PTR gi_stmtHandle;
    II_INT2 gi_columnNumber;
    IIAPI_STATUS gi_status;
    II_ULONG gi_mask;
    II_UINT8 gi_lobLength;
} IIAPI_GETCOLINFOPARM;
typedef struct {
    IIAPI_GENPARM gd_genParm;
    II_PTR gd_stmtHandle;
    II_INT2 gd_descriptorCount;
    IIAPI_DESCRIPTOR *gd_descriptor;
} IIAPI_GETDESCRPARM;
typedef struct {
    II_PTR ge_errorHandle;
    II_LONG ge_type;
    II_CHAR ge_SQLSTATE[II_SQLSTATE_LEN + 1];
    II_LONG ge_errorCode;
    char *ge_message;
    II_BOOL ge_serverInfoAvail;
    IIAPI_SVR_ERRINFO *ge_serverInfo;
    IIAPI_STATUS ge_status;
} IIAPI_GETEINFOPARM;
typedef struct {
    IIAPI_GENPARM gv_genParm;
    II_PTR gv_connHandle;
    II_LONG gv_timeout;
} IIAPI_GETEVENTPARM;
typedef struct {
    IIAPI_GENPARM gq_genParm;
    II_PTR gq_stmtHandle;
    II_ULONG gq_flags;
    II_ULONG gq_mask;
    II_LONG gq_rowCount;
    II_BOOL gq_readonly;
    II_LONG gq_procedureReturn;
    II_PTR gq_procedureHandle;
    II_PTR gq_repeatQueryHandle;
    II_CHAR gq_tableKey[IIAPI_TBLKEYSZ];
    II_CHAR gq_objectKey[IIAPI_OBJKEYSZ];
    II_ULONG gq_cursorType;
    II_ULONG gq_rowStatus;
    II_LONG gq_rowPosition;
    II_INT8 gq_rowCountEx;
} IIAPI_GETQINFOPARM;
typedef struct {
    II_LONG in_timeout;
    II_LONG in_version;
    IIAPI_STATUS in_status;
    II_PTR in_envHandle;
} IIAPI_INITPARM;
typedef struct {
    IIAPI_GENPARM qy_genParm;
    II_PTR qy_connHandle;
    IIAPI_QUERYTYPE qy_queryType;
    char *qy_queryText;
    II_BOOL qy_parameters;
    II_PTR qy_tranHandle;
    II_PTR qy_stmtHandle;
    II_ULONG qy_flags;
} IIAPI_QUERYPARM;
typedef struct { II_PTR re_envHandle; IIAPI_STATUS re_status; } IIAPI_RELENVPARM;
typedef struct {
    IIAPI_GENPARM sc_genParm;
    II_PTR sc_connHandle;
    II_LONG sc_paramID;
    II_PTR sc_paramValue;
} IIAPI_SETCONPRMPARM;
typedef struct {
    II_PTR se_envHandle;
    II_LONG se_paramID;
    II_PTR se_paramValue;
    IIAPI_STATUS se_status;
} IIAPI_SETENVPRMPARM;
typedef struct { IIAPI_STATUS tm_status; } IIAPI_TERMPARM;

/* What IIAPI_EP_EVENT_FUNC is called with for an event no handle caught
 * (iiapi.h; the callback is documented as taking a pointer to it). */
typedef struct {
    II_PTR ev_envHandle;
    II_PTR ev_connHandle;
    II_CHAR *ev_eventName;
    II_CHAR *ev_eventOwner;
    II_CHAR *ev_eventDB;
    IIAPI_DATAVALUE ev_eventTime;
} IIAPI_EVENTPARM;
typedef void (*IIAPI_EVENT_CALLBACK)(IIAPI_EVENTPARM *parm);
typedef struct { II_LONG wt_timeout; IIAPI_STATUS wt_status; } IIAPI_WAITPARM;

typedef struct {
    II_ULONG ti_type;
    union {
        struct { II_UINT4 it_highTran, it_lowTran; II_CHAR ii_tranName[64]; } iiXID;
        struct {
            II_LONG xt_formatID, xt_gtridLength, xt_bqualLength;
            II_CHAR xt_data[128];
            II_INT4 xa_branchSeqnum, xa_branchFlag;
        } xaXID;
    } ti_value;
} IIAPI_TRAN_ID;
typedef struct {
    IIAPI_TRAN_ID rg_tranID;
    II_PTR rg_tranIdHandle;
    IIAPI_STATUS rg_status;
} IIAPI_REGXIDPARM;
typedef struct { II_PTR rl_tranIdHandle; IIAPI_STATUS rl_status; } IIAPI_RELXIDPARM;

/* Unsupported asynchronous functions: only the leading genParm is used. */
typedef struct { IIAPI_GENPARM genParm; } IIAPI_ANY_ASYNC_PARM;

/* ---- date formatting (iiapi_date.c) ---- */

/* Date/time settings of an environment (or of the process defaults). */
typedef struct {
    int date_format;        /* IIAPI_EPV_DFRMT_* */
    int tz_offset_minutes;  /* east of Greenwich */
    char tz_name[64];
} sim_datefmt;

/* Parses an Ingres time zone name; 0 on success. */
int sim_tz_lookup(const char *name, int *offset_minutes);
/* Process defaults from II_DATE_FORMAT / II_TIMEZONE_NAME. */
void sim_datefmt_defaults(sim_datefmt *out);
/* Formats a 12-byte ingresdate as text; returns the text length or -1. */
int sim_format_ingresdate(const unsigned char *value, const sim_datefmt *fmt, char *out,
                          size_t out_size);
/* DTE -> CHA/VCH conversion shared by formatData and convertData. */
IIAPI_STATUS sim_convert(const sim_datefmt *fmt, const IIAPI_DESCRIPTOR *src_desc,
                         const IIAPI_DATAVALUE *src, const IIAPI_DESCRIPTOR *dst_desc,
                         IIAPI_DATAVALUE *dst);

#endif
