/*
 * OpenAPI simulator: ingresdate -> text, as Ingres ADF renders an absolute
 * date in the session's date format (II_DATE_FORMAT / IIAPI_EP_DATE_FORMAT)
 * and time zone (II_TIMEZONE_NAME / IIAPI_EP_TIMEZONE).
 *
 * The layouts follow ADF's date output (adudates.c): US "dd-mmm-yyyy
 * hh:mm:ss" (lowercase month), MULTINATIONAL "dd/mm/yy", FINLAND/SWEDEN
 * "yyyy-mm-dd", ISO "yymmdd", ISO4 "yyyymmdd" (no separators!), GERMAN
 * "dd.mm.yyyy", YMD "yyyy-mmm-dd", MDY "mmm-dd-yyyy", DMY as US,
 * MULTINATIONAL4 "dd/mm/yyyy"; " hh:mm:ss" follows when the date has a time.
 * ISO4T "yyyymmddThhmmss", ISO4TC "yyyymmddThh:mm:ss", ISO8601
 * "yyyy-mm-ddThh:mm:ssZ" (in GMT); ANSI renders no ingresdate (ERROR). These
 * and the truncation rules were compared with Actian Client 1.5 by
 * tests/sim/test_differential.py.
 * A date with a time is stored in GMT and shown in the session time zone;
 * a date without a time is shown as is. The empty date is all blanks.
 *
 * Time zones: the simulator knows "GMT" and fixed offsets "GMT+h", "GMT-h",
 * "GMTh" (hours east of Greenwich, -12..14). Real Ingres also knows region
 * names with daylight-saving rules (NA-PACIFIC, ...); those are refused.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "iiapi_sim.h"

#define DN_ABSOLUTE 0x01
#define DN_LENGTH 0x02
#define DN_TIMESPEC 0x20

static const char *const MONTHS[12] = {"jan", "feb", "mar", "apr", "may", "jun",
                                       "jul", "aug", "sep", "oct", "nov", "dec"};

int sim_tz_lookup(const char *name, int *offset_minutes)
{
    if (name == NULL) return -1;
    if (strcasecmp(name, "GMT") == 0) {
        *offset_minutes = 0;
        return 0;
    }
    if (strncasecmp(name, "GMT", 3) != 0) return -1;
    const char *p = name + 3;
    int sign = 1;
    if (*p == '+' || *p == '-') {
        sign = (*p == '-') ? -1 : 1;
        p++;
    }
    if (!isdigit((unsigned char)p[0])) return -1;
    char *end = NULL;
    long hours = strtol(p, &end, 10);
    if (end == NULL || *end != '\0' || hours > 14) return -1;
    if (sign * hours < -12) return -1;
    *offset_minutes = (int)(sign * hours * 60);
    return 0;
}

/* Maps an II_DATE_FORMAT name to the IIAPI_EPV_DFRMT_* code. */
static int date_format_code(const char *name)
{
    static const struct { const char *name; int code; } table[] = {
        {"US", 0},      {"MULTINATIONAL", 1}, {"FINLAND", 2}, {"SWEDEN", 2},
        {"ISO", 3},     {"GERMAN", 4},        {"YMD", 5},     {"MDY", 6},
        {"DMY", 7},     {"MULTINATIONAL4", 8}, {"ISO4", 9},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcasecmp(name, table[i].name) == 0) return table[i].code;
    return -1;
}

void sim_datefmt_defaults(sim_datefmt *out)
{
    const char *fmt = getenv("II_DATE_FORMAT");
    const char *tz = getenv("II_TIMEZONE_NAME");
    int code = fmt ? date_format_code(fmt) : -1;
    int offset = 0;
    out->date_format = code >= 0 ? code : IIAPI_EPV_DFRMT_US;
    if (tz && sim_tz_lookup(tz, &offset) == 0) {
        out->tz_offset_minutes = offset;
        snprintf(out->tz_name, sizeof out->tz_name, "%s", tz);
    } else {
        out->tz_offset_minutes = 0;
        snprintf(out->tz_name, sizeof out->tz_name, "GMT");
    }
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static long days_from_civil(long y, long m, long d)
{
    y -= m <= 2;
    long era = (y >= 0 ? y : y - 399) / 400;
    long yoe = y - era * 400;
    long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(long z, long *y, long *m, long *d)
{
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    long doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp + (mp < 10 ? 3 : -9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int format_date_part(int dfmt, long y, long m, long d, char *out, size_t n)
{
    const char *mon = MONTHS[m - 1];
    switch (dfmt) {
    case 0: /* US */
    case 7: /* DMY */
        return snprintf(out, n, "%02ld-%s-%04ld", d, mon, y);
    case 1: return snprintf(out, n, "%02ld/%02ld/%02ld", d, m, y % 100);
    case 2: return snprintf(out, n, "%04ld-%02ld-%02ld", y, m, d);
    case 3: return snprintf(out, n, "%02ld%02ld%02ld", y % 100, m, d);
    case 4: return snprintf(out, n, "%02ld.%02ld.%04ld", d, m, y);
    case 5: return snprintf(out, n, "%04ld-%s-%02ld", y, mon, d);
    case 6: return snprintf(out, n, "%s-%02ld-%04ld", mon, d, y);
    case 8: return snprintf(out, n, "%02ld/%02ld/%04ld", d, m, y);
    case 9:  /* ISO4 */
    case 11: /* ISO4T */
    case 12: /* ISO4TC */
        return snprintf(out, n, "%04ld%02ld%02ld", y, m, d);
    case 13: return snprintf(out, n, "%04ld-%02ld-%02ld", y, m, d); /* ISO8601 */
    default: return -1;
    }
}

int sim_format_ingresdate(const unsigned char *v, const sim_datefmt *fmt, char *out,
                          size_t out_size)
{
    signed char status = (signed char)v[0];
    int16_t year, month;
    uint16_t lowday;
    int32_t msecs;
    memcpy(&year, v + 2, 2);
    memcpy(&month, v + 4, 2);
    memcpy(&lowday, v + 6, 2);
    memcpy(&msecs, v + 8, 4);
    if (status == 0) { /* the empty date */
        if (out_size) out[0] = '\0';
        return 0;
    }
    if ((status & DN_LENGTH) || !(status & DN_ABSOLUTE)) return -1; /* intervals */
    long day = (long)lowday + 65536L * (unsigned char)v[1];
    if (month < 1 || month > 12 || day < 1 || day > 31 || msecs < 0 || msecs >= 86400000)
        return -1;
    long y = year, m = month, d = day;
    /* ANSI: an ingresdate has no ANSI rendering; the real library answers
     * IIAPI_ST_ERROR for it. */
    if (fmt->date_format == 10) return -2;
    if (!(status & DN_TIMESPEC)) return format_date_part(fmt->date_format, y, m, d, out, out_size);
    long total = days_from_civil(y, m, d) * 86400L + msecs / 1000 + fmt->tz_offset_minutes * 60L;
    long days = total >= 0 ? total / 86400 : -((-total + 86399) / 86400);
    long secs = total - days * 86400;
    civil_from_days(days, &y, &m, &d);
    int n = format_date_part(fmt->date_format, y, m, d, out, out_size);
    if (n < 0 || (size_t)n >= out_size) return -1;
    long hh = secs / 3600, mi = (secs / 60) % 60, ss = secs % 60;
    char *at = out + n;
    size_t left = out_size - (size_t)n;
    int k;
    if (fmt->date_format == 11) k = snprintf(at, left, "T%02ld%02ld%02ld", hh, mi, ss);
    else if (fmt->date_format == 12) k = snprintf(at, left, "T%02ld:%02ld:%02ld", hh, mi, ss);
    else if (fmt->date_format == 13 && fmt->tz_offset_minutes == 0)
        k = snprintf(at, left, "T%02ld:%02ld:%02ldZ", hh, mi, ss);
    else if (fmt->date_format == 13) { /* not checked against the real library: GMT only */
        int off = fmt->tz_offset_minutes < 0 ? -fmt->tz_offset_minutes : fmt->tz_offset_minutes;
        k = snprintf(at, left, "T%02ld:%02ld:%02ld%c%02d:%02d", hh, mi, ss,
                     fmt->tz_offset_minutes < 0 ? '-' : '+', off / 60, off % 60);
    } else k = snprintf(at, left, " %02ld:%02ld:%02ld", hh, mi, ss);
    return k < 0 ? -1 : n + k;
}

IIAPI_STATUS sim_convert(const sim_datefmt *fmt, const IIAPI_DESCRIPTOR *sd,
                         const IIAPI_DATAVALUE *sv, const IIAPI_DESCRIPTOR *dd,
                         IIAPI_DATAVALUE *dv)
{
    /* Checked against Actian Client 1.5: a NULL is refused (FAILURE) whatever
     * the destination; a date into a type that is no character type is an
     * ADF conversion error (ERROR). Only dates are formatted here. */
    if (sd->ds_dataType != IIAPI_DTE_TYPE || sv->dv_null) return IIAPI_ST_FAILURE;
    int varying = dd->ds_dataType == IIAPI_VCH_TYPE || dd->ds_dataType == IIAPI_TXT_TYPE;
    if (!varying && dd->ds_dataType != IIAPI_CHA_TYPE && dd->ds_dataType != IIAPI_CHR_TYPE)
        return IIAPI_ST_ERROR;
    if (dv->dv_value == NULL) return IIAPI_ST_FAILURE;
    if (sv->dv_value == NULL || sv->dv_length < IIAPI_DTE_LEN) return IIAPI_ST_FAILURE;
    char text[64];
    int n = sim_format_ingresdate((const unsigned char *)sv->dv_value, fmt, text, sizeof text);
    if (n == -2) return IIAPI_ST_ERROR;
    if (n < 0) return IIAPI_ST_FAILURE;
    size_t cap = dd->ds_length;
    unsigned char *out = dv->dv_value;
    dv->dv_null = 0;
    if (varying) {
        /* ADF's default string truncation is silent. */
        if (cap < 2) return IIAPI_ST_FAILURE;
        uint16_t len = (uint16_t)((size_t)n < cap - 2 ? (size_t)n : cap - 2);
        memcpy(out, &len, 2);
        memcpy(out + 2, text, len);
        dv->dv_length = (II_UINT2)(len + 2);
    } else {
        size_t len = (size_t)n < cap ? (size_t)n : cap;
        memcpy(out, text, len);
        memset(out + len, ' ', cap - len); /* fixed-length: blank padded */
        dv->dv_length = (II_UINT2)cap;
    }
    return IIAPI_ST_SUCCESS;
}
