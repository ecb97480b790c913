/* jobhost plugin ABI.
 *
 * The only contract between the jobhost executable and a plugin library. Plain C so that a plugin built by another
 * compiler, or written in another language, can load. Rules that keep it stable:
 *   - every struct begins with `uint32_t struct_size`, set to sizeof by whoever fills it in;
 *   - structs are append-only: a new field goes at the end and bumps JOBHOST_ABI_MINOR;
 *   - a removed or re-typed field bumps JOBHOST_ABI_MAJOR; the host refuses a different major and a newer minor;
 *   - strings are pointer + length (jh_str) and belong to the side that allocated them; the receiver copies what it
 *     wants to keep beyond the call;
 *   - no exception, C++ standard type or RTTI crosses this boundary: errors are a jh_status plus a message written
 *     into a buffer that the caller provides.
 *
 * Discovery: a plugin places one pointer per job type in the ELF section named "jobhost" (see JOBHOST_JOB in
 * sdk.hpp). Each pointer addresses a `jh_job_descriptor` with static storage duration. The host lists the section,
 * checks `struct_size` and `abi_version` of each descriptor, and only then calls any of its functions.
 */
#ifndef JOBHOST_ABI_H
#define JOBHOST_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define JOBHOST_ABI_MAJOR 1u
#define JOBHOST_ABI_MINOR 0u
#define JOBHOST_ABI_MAKE_VERSION(major, minor) ((uint32_t)(((major) << 16) | ((minor)&0xffffu)))
#define JOBHOST_ABI_VERSION JOBHOST_ABI_MAKE_VERSION(JOBHOST_ABI_MAJOR, JOBHOST_ABI_MINOR)
#define JOBHOST_ABI_VERSION_MAJOR(v) ((uint32_t)(v) >> 16)
#define JOBHOST_ABI_VERSION_MINOR(v) ((uint32_t)(v)&0xffffu)

/* Status codes used across the boundary. */
typedef int32_t jh_status;
#define JH_OK 0            /* success */
#define JH_FAILED 1        /* failed; may be retried */
#define JH_PERMANENT 2     /* failed; never retried, goes straight to the dead-letter queue */
#define JH_NOT_SUPPORTED 3 /* the host does not offer this service (yet) */
#define JH_INVALID 4       /* the arguments were rejected; the error buffer says why */

/* Flags for jh_host_api.set_result. */
#define JH_RESULT_NO_RETRY 1u /* the task's should_retry said no: do not retry this failure */

/* Priorities, lowest first. */
#define JH_PRIORITY_LOW 0
#define JH_PRIORITY_NORMAL 1
#define JH_PRIORITY_MEDIUM 2
#define JH_PRIORITY_HIGH 3
#define JH_PRIORITY_CRITICAL 4

/* Log levels for jh_host_api.log. */
#define JH_LOG_TRACE 0
#define JH_LOG_DEBUG 1
#define JH_LOG_INFO 2
#define JH_LOG_WARNING 3
#define JH_LOG_ERROR 4

/* A string that is not necessarily NUL-terminated. Owned by the side that made it. */
typedef struct jh_str {
    const char* data;
    size_t size;
} jh_str;

/* Options for enqueueing a job from inside a running job. */
typedef struct jh_enqueue_options {
    uint32_t struct_size;
    int32_t priority;       /* JH_PRIORITY_*, or -1 for the type's own priority */
    int64_t delay_ms;       /* run no earlier than now + delay_ms; 0 for none */
    int64_t run_at_unix_ms; /* run no earlier than this time; 0 for none (delay_ms wins if both are set) */
    jh_str unique_key;      /* size 0: no unique key */
} jh_enqueue_options;

/* One job handed to jh_job_descriptor.run. Owned by the host and valid only during that call. */
typedef struct jh_job {
    uint32_t struct_size;
    jh_str id;
    jh_str type;
    jh_str payload;           /* JSON text, always valid JSON (the host validated it on enqueue) */
    uint32_t attempt;         /* 1 on the first run */
    uint32_t max_retries;     /* the job runs at most 1 + max_retries times */
    int64_t deadline_unix_ms; /* 0: no deadline */
    void* host_handle;        /* pass back to jh_host_api calls that concern this job */
} jh_job;

/* Services the host offers to plugin code. Owned by the host; valid from create() until destroy() returns.
 * Every function is thread-safe and may be called from any thread that the host called into the plugin on.
 * `handle` is a jh_job.host_handle, or the jh_task_config.host_handle for calls outside a run. */
typedef struct jh_host_api {
    uint32_t struct_size;
    uint32_t abi_version;
    /* Writes one record through the host's logger, tagged with the job's type and id. */
    void (*log)(void* handle, int32_t level, jh_str message);
    /* Non-zero once the job should stop: its deadline passed or the host is shutting down. */
    int32_t (*cancelled)(void* job_handle);
    /* Reports progress, 0..100, with an optional message. */
    void (*progress)(void* job_handle, int32_t percent, jh_str message);
    /* Enqueues another job. On JH_OK writes the new job's id (NUL-terminated, truncated to id_cap) into id_out; on
     * any other status writes the reason into error. May return JH_NOT_SUPPORTED. */
    jh_status (*enqueue)(void* handle, jh_str type, jh_str payload, const jh_enqueue_options* options, char* id_out,
                         size_t id_cap, char* error, size_t error_cap);
    /* Records the outcome of one job of the current run. The host copies both strings. A job of a run that gets no
     * result counts as failed. `output` is JSON text or empty. */
    void (*set_result)(void* job_handle, jh_status status, uint32_t flags, jh_str message, jh_str output);
} jh_host_api;

/* What the host hands to create(). Owned by the host; `host` stays valid until destroy() returns. */
typedef struct jh_task_config {
    uint32_t struct_size;
    jh_str type;
    jh_str settings_json; /* the [jobs.<type>.settings] table as a JSON object; "{}" when there is none */
    const jh_host_api* host;
    void* host_handle; /* for host->log outside a run */
} jh_task_config;

/* One job type. Lives in the plugin's static storage; the host copies it field by field up to struct_size.
 * Durations are milliseconds. NULL strings mean "not set". */
typedef struct jh_job_descriptor {
    uint32_t struct_size;
    uint32_t abi_version;
    const char* type; /* required, [a-z0-9_.-]+ */
    const char* name;
    const char* description;
    const char* version;
    int32_t enabled;
    int32_t priority;
    int64_t interval_ms; /* 0: not periodic by interval */
    const char* cron;    /* NULL or "": not periodic by cron */
    int32_t max_retries;
    int32_t dead_letter;
    int64_t backoff_initial_ms;
    double backoff_multiplier;
    int64_t backoff_max_ms;
    double backoff_jitter; /* 0..1: each delay is scaled by a random factor in [1 - jitter, 1 + jitter] */
    int64_t timeout_ms;    /* 0: no timeout */
    uint32_t concurrency;
    uint32_t batch_size;
    /* Creates the type's single task instance. On failure returns a status other than JH_OK, leaves *task_out NULL
     * and writes the reason into error (NUL-terminated, truncated to error_cap). Must not throw. */
    jh_status (*create)(const jh_task_config* config, void** task_out, char* error, size_t error_cap);
    /* Destroys what create() made. Called once, after the last run has returned. Must not throw. */
    void (*destroy)(void* task);
    /* Runs `count` jobs (count <= batch_size) and reports each one's outcome through host->set_result. May be
     * called on several threads at once when concurrency > 1. Must not throw. */
    void (*run)(void* task, const jh_job* jobs, size_t count);
} jh_job_descriptor;

/* The smallest descriptor the host accepts: ABI 1.0 ends after `run`. */
#define JOBHOST_DESCRIPTOR_MIN_SIZE (offsetof(jh_job_descriptor, run) + sizeof(void (*)(void)))

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* JOBHOST_ABI_H */
