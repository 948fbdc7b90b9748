/*
 * A fake libdcgm for flinch's tests. It exports the DCGM symbols flinch-dcgm resolves,
 * with the prototypes and struct layouts of the DCGM 4.6.0 headers, and
 *   - reads a script from "<this library's path>.script" (on the first call),
 *   - appends one line per call to "<this library's path>.log" (and one "served" line
 *     per value it hands to a callback), so tests can check call order and values.
 * Handles are pointer-sized and above 2^32, so a binding that truncates them to 32 bits
 * fails. Every handle passed in is checked; a wrong one returns DCGM_ST_BADPARAM.
 *
 * Script lines (# starts a comment):
 *   gpus 0 1                       GPU ids dcgmGetAllSupportedDevices returns (default: 0)
 *   fail FUNCTION CODE [NTH]       FUNCTION returns CODE on its NTH call (every call if absent)
 *   fail_field FUNCTION FIELD CODE dcgmFieldGroupCreate / dcgmWatchFields return CODE when
 *                                  the field group holds FIELD
 *   overlap                        dcgmGetValuesSince_v2 returns a cursor equal to the last
 *                                  timestamp served (so that value is served again)
 *   sample STEP GPU FIELD TS VALUE a value that becomes visible from the STEP-th
 *                                  dcgmGetValuesSince_v2 call on a field group holding
 *                                  FIELD (0: from the start). TS: "abs:US" (µs since 1970)
 *                                  or "ago:US" (µs before the wall clock at release).
 *                                  VALUE: a number, or blank | notfound | notsupported |
 *                                  noperm (the DCGM sentinels), or status:CODE.
 *
 * Compile with -fvisibility=hidden -Wl,-Bsymbolic so that several copies loaded into one
 * process (one per test) never bind to each other's symbols.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define API __attribute__((visibility("default")))

typedef int dcgmReturn_t;
typedef uintptr_t dcgmHandle_t;
typedef uintptr_t dcgmGpuGrp_t;
typedef uintptr_t dcgmFieldGrp_t;

typedef struct {
    unsigned int version;
    unsigned int persistAfterDisconnect;
    unsigned int timeoutMs;
    unsigned int addressIsUnixSocket;
} dcgmConnectV2Params_t;

typedef struct {
    unsigned int version;
    unsigned short fieldId;
    unsigned short fieldType;
    int status;
    int64_t ts;
    union {
        int64_t i64;
        double dbl;
        char str[256];
        char blob[4096];
    } value;
} dcgmFieldValue_v1;

_Static_assert(sizeof(dcgmFieldValue_v1) == 4120, "dcgmFieldValue_v1 is 4120 bytes");
_Static_assert(sizeof(dcgmConnectV2Params_t) == 16, "dcgmConnectV2Params_v2 is 16 bytes");
_Static_assert(sizeof(dcgmHandle_t) == sizeof(void *), "handles are pointer-sized");

typedef int (*dcgmFieldValueEntityEnumeration_f)(unsigned int entityGroupId, unsigned int entityId,
                                                 dcgmFieldValue_v1 *values, int numValues,
                                                 void *userData);

#define ST_OK 0
#define ST_BADPARAM -1
#define ST_UNINITIALIZED -10
#define ST_VER_MISMATCH -12
#define ST_NO_DATA -14
#define ST_NOT_WATCHED -16
#define ST_DUPLICATE_KEY -26
#define VERSION_FV1 0x01001018u
#define VERSION_CONNECT_V2 0x02000010u
#define INT64_BLANK 0x7ffffffffffffff0LL
#define FP64_BLANK 140737488355328.0

#define HANDLE_BASE 0x7e5700000000ull
#define GROUP_BASE 0x6a0100000000ull
#define FG_BASE 0x5f0200000000ull

enum { K_NUM, K_BLANK, K_NOTFOUND, K_NOTSUPPORTED, K_NOPERM, K_STATUS };
enum { TS_ABS, TS_AGO };

struct sample {
    int step;
    unsigned int gpu;
    unsigned short field;
    int ts_mode;
    long long ts;
    int kind;
    double num;
    int status;
    int released;
    long long real_ts;
};

struct failure {
    char fn[64];
    int code;
    int nth;   /* 0: every call */
    int field; /* -1: any */
};

struct fgroup {
    int active, watched, calls, n;
    unsigned short ids[128];
    char name[256];
};

struct group {
    int active, n;
    unsigned int gpus[32];
};

struct counter {
    char fn[64];
    int n;
};

static int loaded;
static char base_path[4096];
static unsigned int gpu_ids[32] = {0};
static int n_gpus = 1;
static struct sample samples[4096];
static int n_samples;
static struct failure failures[64];
static int n_failures;
static struct counter counters[64];
static int n_counters;
static int overlap;
static int inited;
static dcgmHandle_t live_handles[4];
static unsigned long long next_handle = 1;
static struct group groups[16];
static struct fgroup fgroups[16];

static void anchor(void) {}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#include <stdarg.h>
static void logf_(const char *fmt, ...) {
    char path[4200];
    snprintf(path, sizeof path, "%s.log", base_path);
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

__attribute__((unused)) static long long now_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000000LL + tv.tv_usec;
}

static int parse_value(const char *tok, struct sample *s) {
    if (!strcmp(tok, "blank"))
        s->kind = K_BLANK;
    else if (!strcmp(tok, "notfound"))
        s->kind = K_NOTFOUND;
    else if (!strcmp(tok, "notsupported"))
        s->kind = K_NOTSUPPORTED;
    else if (!strcmp(tok, "noperm"))
        s->kind = K_NOPERM;
    else if (!strncmp(tok, "status:", 7)) {
        s->kind = K_STATUS;
        s->status = atoi(tok + 7);
    } else {
        char *end;
        s->kind = K_NUM;
        s->num = strtod(tok, &end);
        if (*end)
            return -1;
    }
    return 0;
}

static void load(void) {
    if (loaded)
        return;
    loaded = 1;
    Dl_info info;
    if (dladdr((void *)&anchor, &info) && info.dli_fname)
        snprintf(base_path, sizeof base_path, "%s", info.dli_fname);
    else
        snprintf(base_path, sizeof base_path, "/tmp/fake-dcgm");
    char path[4200];
    snprintf(path, sizeof path, "%s.script", base_path);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *tok[16];
        int nt = 0;
        for (char *t = strtok(line, " \t\r\n"); t && nt < 16; t = strtok(NULL, " \t\r\n"))
            tok[nt++] = t;
        if (nt == 0)
            continue;
        if (!strcmp(tok[0], "gpus")) {
            n_gpus = 0;
            for (int i = 1; i < nt && n_gpus < 32; i++)
                gpu_ids[n_gpus++] = (unsigned)atoi(tok[i]);
        } else if (!strcmp(tok[0], "fail") && nt >= 3 && n_failures < 64) {
            struct failure *x = &failures[n_failures++];
            snprintf(x->fn, sizeof x->fn, "%s", tok[1]);
            x->code = atoi(tok[2]);
            x->nth = nt >= 4 ? atoi(tok[3]) : 0;
            x->field = -1;
        } else if (!strcmp(tok[0], "fail_field") && nt >= 4 && n_failures < 64) {
            struct failure *x = &failures[n_failures++];
            snprintf(x->fn, sizeof x->fn, "%s", tok[1]);
            x->field = atoi(tok[2]);
            x->code = atoi(tok[3]);
            x->nth = 0;
        } else if (!strcmp(tok[0], "overlap")) {
            overlap = 1;
        } else if (!strcmp(tok[0], "sample") && nt == 6 && n_samples < 4096) {
            struct sample *s = &samples[n_samples];
            memset(s, 0, sizeof *s);
            s->step = atoi(tok[1]);
            s->gpu = (unsigned)atoi(tok[2]);
            s->field = (unsigned short)atoi(tok[3]);
            if (!strncmp(tok[4], "abs:", 4))
                s->ts_mode = TS_ABS, s->ts = atoll(tok[4] + 4);
            else if (!strncmp(tok[4], "ago:", 4))
                s->ts_mode = TS_AGO, s->ts = atoll(tok[4] + 4);
            else {
                logf_("SCRIPT-ERROR line %d: bad timestamp %s", lineno, tok[4]);
                continue;
            }
            if (parse_value(tok[5], s)) {
                logf_("SCRIPT-ERROR line %d: bad value %s", lineno, tok[5]);
                continue;
            }
            n_samples++;
        } else {
            logf_("SCRIPT-ERROR line %d: %s", lineno, tok[0]);
        }
    }
    fclose(f);
}

static int count_call(const char *fn) {
    for (int i = 0; i < n_counters; i++)
        if (!strcmp(counters[i].fn, fn))
            return ++counters[i].n;
    if (n_counters < 64) {
        snprintf(counters[n_counters].fn, sizeof counters[n_counters].fn, "%s", fn);
        counters[n_counters].n = 1;
        n_counters++;
    }
    return 1;
}

/* Counts the call and returns the scripted failure code, or 0. */
static int scripted(const char *fn, const unsigned short *ids, int n) {
    int call = count_call(fn);
    for (int i = 0; i < n_failures; i++) {
        struct failure *x = &failures[i];
        if (strcmp(x->fn, fn))
            continue;
        if (x->nth && x->nth != call)
            continue;
        if (x->field >= 0) {
            int has = 0;
            for (int k = 0; k < n; k++)
                has |= ids[k] == x->field;
            if (!has)
                continue;
        }
        return x->code;
    }
    return 0;
}

static int ret(const char *fn, int rc) {
    logf_("%s -> %d", fn, rc);
    return rc;
}

static int is_double_field(unsigned short id) {
    return id == 155 || id == 157 || (id >= 1001 && id <= 1014);
}

static struct group *find_group(dcgmGpuGrp_t g) {
    if (g < GROUP_BASE || g >= GROUP_BASE + 16)
        return NULL;
    struct group *x = &groups[g - GROUP_BASE];
    return x->active ? x : NULL;
}

static struct fgroup *find_fg(dcgmFieldGrp_t fg) {
    if (fg < FG_BASE || fg >= FG_BASE + 16)
        return NULL;
    struct fgroup *x = &fgroups[fg - FG_BASE];
    return x->active ? x : NULL;
}

static int handle_ok(dcgmHandle_t h) {
    for (int i = 0; i < 4; i++)
        if (h && live_handles[i] == h)
            return 1;
    return 0;
}

static void drop_handle(dcgmHandle_t h) {
    for (int i = 0; i < 4; i++)
        if (live_handles[i] == h)
            live_handles[i] = 0;
}

API dcgmReturn_t dcgmInit(void) {
    load();
    logf_("dcgmInit");
    int rc = scripted("dcgmInit", NULL, 0);
    if (rc)
        return ret("dcgmInit", rc);
    inited = 1;
    return ST_OK;
}

API dcgmReturn_t dcgmShutdown(void) {
    load();
    logf_("dcgmShutdown");
    for (int i = 0; i < 16; i++) {
        if (groups[i].active)
            logf_("LEAK group %d", i);
        if (fgroups[i].active)
            logf_("LEAK fieldgroup %s", fgroups[i].name);
    }
    for (int i = 0; i < 4; i++)
        if (live_handles[i])
            logf_("LEAK handle");
    int rc = scripted("dcgmShutdown", NULL, 0);
    inited = 0;
    return rc ? ret("dcgmShutdown", rc) : ST_OK;
}

static int new_handle(dcgmHandle_t *out) {
    for (int i = 0; i < 4; i++) {
        if (!live_handles[i]) {
            live_handles[i] = HANDLE_BASE + (next_handle++);
            *out = live_handles[i];
            return 0;
        }
    }
    return -1;
}

API dcgmReturn_t dcgmStartEmbedded(int opMode, dcgmHandle_t *pDcgmHandle) {
    load();
    logf_("dcgmStartEmbedded mode=%d", opMode);
    if (!inited)
        return ret("dcgmStartEmbedded", ST_UNINITIALIZED);
    if ((opMode != 1 && opMode != 2) || !pDcgmHandle)
        return ret("dcgmStartEmbedded", ST_BADPARAM);
    int rc = scripted("dcgmStartEmbedded", NULL, 0);
    if (rc)
        return ret("dcgmStartEmbedded", rc);
    if (new_handle(pDcgmHandle))
        return ret("dcgmStartEmbedded", ST_BADPARAM);
    return ST_OK;
}

API dcgmReturn_t dcgmStopEmbedded(dcgmHandle_t h) {
    load();
    logf_("dcgmStopEmbedded");
    if (!handle_ok(h))
        return ret("dcgmStopEmbedded", ST_BADPARAM);
    drop_handle(h);
    int rc = scripted("dcgmStopEmbedded", NULL, 0);
    return rc ? ret("dcgmStopEmbedded", rc) : ST_OK;
}

API dcgmReturn_t dcgmConnect_v2(const char *ipAddress, dcgmConnectV2Params_t *params,
                                dcgmHandle_t *pDcgmHandle) {
    load();
    if (!ipAddress || !params || !pDcgmHandle) {
        logf_("dcgmConnect_v2 null");
        return ret("dcgmConnect_v2", ST_BADPARAM);
    }
    logf_("dcgmConnect_v2 address=%s unix=%u persist=%u timeout=%u version=0x%08x", ipAddress,
          params->addressIsUnixSocket, params->persistAfterDisconnect, params->timeoutMs,
          params->version);
    if (!inited)
        return ret("dcgmConnect_v2", ST_UNINITIALIZED);
    if (params->version != VERSION_CONNECT_V2)
        return ret("dcgmConnect_v2", ST_VER_MISMATCH);
    int rc = scripted("dcgmConnect_v2", NULL, 0);
    if (rc)
        return ret("dcgmConnect_v2", rc);
    if (new_handle(pDcgmHandle))
        return ret("dcgmConnect_v2", ST_BADPARAM);
    return ST_OK;
}

API dcgmReturn_t dcgmDisconnect(dcgmHandle_t h) {
    load();
    logf_("dcgmDisconnect");
    if (!handle_ok(h))
        return ret("dcgmDisconnect", ST_BADPARAM);
    drop_handle(h);
    int rc = scripted("dcgmDisconnect", NULL, 0);
    return rc ? ret("dcgmDisconnect", rc) : ST_OK;
}

API const char *errorString(dcgmReturn_t result) {
    switch (result) {
    case 0: return "Success";
    case -1: return "Bad parameter passed to function";
    case -6: return "Not Supported";
    case -10: return "Uninitialized";
    case -12: return "Version Mismatch";
    case -13: return "Unknown field id";
    case -14: return "No data is available";
    case -16: return "Field is not being updated";
    case -17: return "Permission denied";
    case -18: return "GPU is lost";
    case -21: return "Connection not valid";
    case -26: return "Duplicate key";
    case -29: return "This request is serviced by a module of DCGM that requires root";
    case -36: return "The requested profiling metrics cannot be collected in a single pass";
    default: return NULL;
    }
}

API dcgmReturn_t dcgmGetAllSupportedDevices(dcgmHandle_t h, unsigned int gpuIdList[32],
                                            int *count) {
    load();
    logf_("dcgmGetAllSupportedDevices");
    if (!handle_ok(h) || !gpuIdList || !count)
        return ret("dcgmGetAllSupportedDevices", ST_BADPARAM);
    int rc = scripted("dcgmGetAllSupportedDevices", NULL, 0);
    if (rc)
        return ret("dcgmGetAllSupportedDevices", rc);
    for (int i = 0; i < n_gpus; i++)
        gpuIdList[i] = gpu_ids[i];
    *count = n_gpus;
    return ST_OK;
}

API dcgmReturn_t dcgmGroupCreate(dcgmHandle_t h, int type, const char *groupName,
                                 dcgmGpuGrp_t *pDcgmGrpId) {
    load();
    logf_("dcgmGroupCreate type=%d name=%s", type, groupName ? groupName : "(null)");
    if (!handle_ok(h) || !groupName || !pDcgmGrpId || type != 1)
        return ret("dcgmGroupCreate", ST_BADPARAM);
    int rc = scripted("dcgmGroupCreate", NULL, 0);
    if (rc)
        return ret("dcgmGroupCreate", rc);
    for (int i = 0; i < 16; i++) {
        if (!groups[i].active) {
            memset(&groups[i], 0, sizeof groups[i]);
            groups[i].active = 1;
            *pDcgmGrpId = GROUP_BASE + i;
            return ST_OK;
        }
    }
    return ret("dcgmGroupCreate", -24);
}

API dcgmReturn_t dcgmGroupAddDevice(dcgmHandle_t h, dcgmGpuGrp_t groupId, unsigned int gpuId) {
    load();
    logf_("dcgmGroupAddDevice gpu=%u", gpuId);
    struct group *g = find_group(groupId);
    if (!handle_ok(h) || !g)
        return ret("dcgmGroupAddDevice", ST_BADPARAM);
    int known = 0;
    for (int i = 0; i < n_gpus; i++)
        known |= gpu_ids[i] == gpuId;
    if (!known || g->n >= 32)
        return ret("dcgmGroupAddDevice", ST_BADPARAM);
    int rc = scripted("dcgmGroupAddDevice", NULL, 0);
    if (rc)
        return ret("dcgmGroupAddDevice", rc);
    g->gpus[g->n++] = gpuId;
    return ST_OK;
}

API dcgmReturn_t dcgmGroupDestroy(dcgmHandle_t h, dcgmGpuGrp_t groupId) {
    load();
    logf_("dcgmGroupDestroy");
    struct group *g = find_group(groupId);
    if (!handle_ok(h) || !g)
        return ret("dcgmGroupDestroy", ST_BADPARAM);
    g->active = 0;
    int rc = scripted("dcgmGroupDestroy", NULL, 0);
    return rc ? ret("dcgmGroupDestroy", rc) : ST_OK;
}

API dcgmReturn_t dcgmFieldGroupCreate(dcgmHandle_t h, int numFieldIds,
                                      const unsigned short *fieldIds, const char *fieldGroupName,
                                      dcgmFieldGrp_t *dcgmFieldGroupId) {
    load();
    if (!handle_ok(h) || numFieldIds < 1 || numFieldIds > 128 || !fieldIds || !fieldGroupName ||
        !dcgmFieldGroupId) {
        logf_("dcgmFieldGroupCreate bad");
        return ret("dcgmFieldGroupCreate", ST_BADPARAM);
    }
    char ids[1024] = "";
    for (int i = 0; i < numFieldIds; i++) {
        char one[16];
        snprintf(one, sizeof one, i ? ",%u" : "%u", fieldIds[i]);
        strncat(ids, one, sizeof ids - strlen(ids) - 1);
    }
    logf_("dcgmFieldGroupCreate ids=%s name=%s", ids, fieldGroupName);
    int rc = scripted("dcgmFieldGroupCreate", fieldIds, numFieldIds);
    if (rc)
        return ret("dcgmFieldGroupCreate", rc);
    for (int i = 0; i < 16; i++)
        if (fgroups[i].active && !strcmp(fgroups[i].name, fieldGroupName))
            return ret("dcgmFieldGroupCreate", ST_DUPLICATE_KEY);
    for (int i = 0; i < 16; i++) {
        if (!fgroups[i].active) {
            struct fgroup *x = &fgroups[i];
            memset(x, 0, sizeof *x);
            x->active = 1;
            x->n = numFieldIds;
            memcpy(x->ids, fieldIds, sizeof(unsigned short) * numFieldIds);
            snprintf(x->name, sizeof x->name, "%s", fieldGroupName);
            *dcgmFieldGroupId = FG_BASE + i;
            return ST_OK;
        }
    }
    return ret("dcgmFieldGroupCreate", -24);
}

API dcgmReturn_t dcgmFieldGroupDestroy(dcgmHandle_t h, dcgmFieldGrp_t fieldGroupId) {
    load();
    struct fgroup *x = find_fg(fieldGroupId);
    logf_("dcgmFieldGroupDestroy name=%s", x ? x->name : "?");
    if (!handle_ok(h) || !x)
        return ret("dcgmFieldGroupDestroy", ST_BADPARAM);
    if (x->watched)
        logf_("WARN field group %s destroyed while watched", x->name);
    x->active = 0;
    int rc = scripted("dcgmFieldGroupDestroy", NULL, 0);
    return rc ? ret("dcgmFieldGroupDestroy", rc) : ST_OK;
}

API dcgmReturn_t dcgmWatchFields(dcgmHandle_t h, dcgmGpuGrp_t groupId,
                                 dcgmFieldGrp_t fieldGroupId, long long updateFreq,
                                 double maxKeepAge, int maxKeepSamples) {
    load();
    struct fgroup *x = find_fg(fieldGroupId);
    logf_("dcgmWatchFields name=%s freq=%lld age=%g samples=%d", x ? x->name : "?", updateFreq,
          maxKeepAge, maxKeepSamples);
    if (!handle_ok(h) || !find_group(groupId) || !x || updateFreq <= 0)
        return ret("dcgmWatchFields", ST_BADPARAM);
    int rc = scripted("dcgmWatchFields", x->ids, x->n);
    if (rc)
        return ret("dcgmWatchFields", rc);
    x->watched = 1;
    return ST_OK;
}

API dcgmReturn_t dcgmUnwatchFields(dcgmHandle_t h, dcgmGpuGrp_t groupId,
                                   dcgmFieldGrp_t fieldGroupId) {
    load();
    struct fgroup *x = find_fg(fieldGroupId);
    logf_("dcgmUnwatchFields name=%s", x ? x->name : "?");
    if (!handle_ok(h) || !find_group(groupId) || !x)
        return ret("dcgmUnwatchFields", ST_BADPARAM);
    x->watched = 0;
    int rc = scripted("dcgmUnwatchFields", NULL, 0);
    return rc ? ret("dcgmUnwatchFields", rc) : ST_OK;
}

API dcgmReturn_t dcgmUpdateAllFields(dcgmHandle_t h, int waitForUpdate) {
    load();
    logf_("dcgmUpdateAllFields wait=%d", waitForUpdate);
    if (!handle_ok(h))
        return ret("dcgmUpdateAllFields", ST_BADPARAM);
    int rc = scripted("dcgmUpdateAllFields", NULL, 0);
    return rc ? ret("dcgmUpdateAllFields", rc) : ST_OK;
}

__attribute__((unused)) static void fill(dcgmFieldValue_v1 *v, const struct sample *s) {
    memset(v, 0xAB, sizeof *v); /* garbage where nothing is written */
    v->version = VERSION_FV1;
    v->fieldId = s->field;
    int dbl = is_double_field(s->field);
    v->fieldType = dbl ? 'd' : 'i';
    v->status = 0;
    v->ts = s->real_ts;
    int off = 0;
    switch (s->kind) {
    case K_NUM:
        if (dbl)
            v->value.dbl = s->num;
        else
            v->value.i64 = (int64_t)s->num;
        return;
    case K_BLANK: off = 0; break;
    case K_NOTFOUND: off = 1; break;
    case K_NOTSUPPORTED: off = 2; break;
    case K_NOPERM: off = 3; break;
    case K_STATUS:
        v->status = s->status;
        /* the value looks like a perfectly good zero: only the status says otherwise */
        if (dbl)
            v->value.dbl = 0.0;
        else
            v->value.i64 = 0;
        return;
    }
    if (dbl)
        v->value.dbl = FP64_BLANK + off;
    else
        v->value.i64 = INT64_BLANK + off;
}

__attribute__((unused)) static const char *kind_name(const struct sample *s, char *buf, size_t n) {
    switch (s->kind) {
    case K_NUM: snprintf(buf, n, "%.17g", s->num); break;
    case K_BLANK: snprintf(buf, n, "blank"); break;
    case K_NOTFOUND: snprintf(buf, n, "notfound"); break;
    case K_NOTSUPPORTED: snprintf(buf, n, "notsupported"); break;
    case K_NOPERM: snprintf(buf, n, "noperm"); break;
    case K_STATUS: snprintf(buf, n, "status:%d", s->status); break;
    }
    return buf;
}

#ifndef FAKE_OMIT_GET_VALUES_SINCE
API dcgmReturn_t dcgmGetValuesSince_v2(dcgmHandle_t h, dcgmGpuGrp_t groupId,
                                       dcgmFieldGrp_t fieldGroupId, long long sinceTimestamp,
                                       long long *nextSinceTimestamp,
                                       dcgmFieldValueEntityEnumeration_f enumCB, void *userData) {
    load();
    struct fgroup *x = find_fg(fieldGroupId);
    struct group *g = find_group(groupId);
    logf_("dcgmGetValuesSince_v2 name=%s since=%lld", x ? x->name : "?", sinceTimestamp);
    if (!handle_ok(h) || !g || !x || !nextSinceTimestamp || !enumCB)
        return ret("dcgmGetValuesSince_v2", ST_BADPARAM);
    if (!x->watched)
        return ret("dcgmGetValuesSince_v2", ST_NOT_WATCHED);
    int rc = scripted("dcgmGetValuesSince_v2", x->ids, x->n);
    if (rc)
        return ret("dcgmGetValuesSince_v2", rc);
    int step = ++x->calls;
    long long now = now_us();
    long long max_ts = -1;
    int served = 0;
    static dcgmFieldValue_v1 chunk[2];
    for (int gi = 0; gi < g->n; gi++) {
        unsigned int gpu = g->gpus[gi];
        /* this GPU's visible values in time order (insertion sort over indices) */
        static int idx[4096];
        int m = 0;
        for (int i = 0; i < n_samples; i++) {
            struct sample *s = &samples[i];
            int in_fg = 0;
            for (int k = 0; k < x->n; k++)
                in_fg |= x->ids[k] == s->field;
            if (!in_fg || s->gpu != gpu || s->step > step)
                continue;
            if (!s->released) {
                s->released = 1;
                s->real_ts = s->ts_mode == TS_ABS ? s->ts : now - s->ts;
            }
            if (s->real_ts < sinceTimestamp)
                continue;
            int j = m++;
            while (j > 0 && samples[idx[j - 1]].real_ts > s->real_ts) {
                idx[j] = idx[j - 1];
                j--;
            }
            idx[j] = i;
        }
        /* hand them over two at a time: callers must accept several calls per entity */
        for (int i = 0; i < m; i += 2) {
            int k = (m - i) < 2 ? (m - i) : 2;
            for (int j = 0; j < k; j++) {
                struct sample *s = &samples[idx[i + j]];
                char buf[64];
                fill(&chunk[j], s);
                logf_("served gpu=%u field=%u ts=%lld value=%s", gpu, s->field, s->real_ts,
                      kind_name(s, buf, sizeof buf));
                if (s->real_ts > max_ts)
                    max_ts = s->real_ts;
                served++;
            }
            if (enumCB(1 /* DCGM_FE_GPU */, gpu, chunk, k, userData) < 0)
                break;
        }
    }
    if (!served) {
        *nextSinceTimestamp = sinceTimestamp;
        return ret("dcgmGetValuesSince_v2", ST_NO_DATA);
    }
    *nextSinceTimestamp = overlap ? max_ts : max_ts + 1;
    return ST_OK;
}
#endif
