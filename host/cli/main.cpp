// jobhost: loads job types from shared libraries and runs their jobs.
#include "cli/commands.hpp"
#include "cli/store_commands.hpp"
#include "runner/worker.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

using namespace jobhost;

namespace {

struct Flags {
    bool plugin_dir = true;
    bool json = false;
    bool store = true;
};

void add_common(CLI::App& app, cli::CommonOptions& o, std::string& level, Flags f) {
    app.add_option("-c,--config", o.config, "Configuration file (TOML); without it, defaults, ./plugins and ./var")
        ->check(CLI::ExistingFile);
    if (f.plugin_dir) app.add_option("--plugin-dir", o.plugin_dir, "Plugin folder, overriding [host] plugin_dir");
    if (f.store)
        app.add_option("--store", o.store,
                       "Store file, overriding [store] path (\"memory\": no file; a postgresql:// URL: that database)");
    app.add_option("--log-level", level, "trace, debug, info, warning or error, overriding [log] level")
        ->check(CLI::IsMember({"trace", "debug", "info", "warning", "error"}));
    app.add_flag("--strict", o.strict, "Treat any plugin problem as fatal (exit 2)");
    if (f.json) app.add_flag("--json", o.json, "Print JSON instead of a table");
}

} // namespace

int main(int argc, char** argv) {
    // A worker process of a process-isolated job type, started by the host (see runner/worker.hpp). Handled before
    // anything else: it has no config, no log sinks and no store of its own.
    if (argc == 4 && std::string_view(argv[1]) == "worker" && std::string_view(argv[2]) == "--socket-fd")
        return runner::worker_main(std::stoi(argv[3]));
    CLI::App app{"jobhost: runs jobs whose types are loaded from shared-library plugins.\n"
                 "Exit codes: 0 clean, 1 runtime failure, 2 usage or configuration error.",
                 "jobhost"};
    app.set_version_flag("-V,--version", std::string("jobhost ") + JOBHOST_VERSION);
    app.require_subcommand(0, 1);

    cli::CommonOptions opts;
    std::string level;
    add_common(app, opts, level, {});

    auto* run = app.add_subcommand("run", "Load plugins and run jobs until SIGINT or SIGTERM (the default)");
    add_common(*run, opts, level, {});
    run->add_option("--enqueue", opts.enqueue, "Queue a job at start-up: TYPE or TYPE=JSON (repeatable)");
    run->add_option("--listen", opts.listen,
                    "HTTP address HOST:PORT (port 0: any free port), or off; overrides [http]");
    auto* plugins =
        app.add_subcommand("plugins", "List discovered job types, their effective settings, and skipped files");
    add_common(*plugins, opts, level, {.json = true, .store = false});
    auto* check = app.add_subcommand("check", "Validate the configuration against the discovered plugins; run nothing");
    add_common(*check, opts, level, {.store = false});

    cli::EnqueueOptions eo;
    auto* enqueue =
        app.add_subcommand("enqueue", "Queue a job in the store; a running host picks it up within a second");
    add_common(*enqueue, opts, level, {});
    enqueue->add_option("type", eo.type, "Job type")->required();
    enqueue->add_option("--payload", eo.payload, "Payload, JSON text");
    enqueue->add_option("--payload-file", eo.payload_file, "Read the payload from this file");
    enqueue->add_option("--jsonl", eo.jsonl, "Queue one job per line of this file, the line being its payload");
    enqueue->add_option("--priority", eo.priority, "low, normal, medium, high or critical (default: the type's)");
    enqueue->add_option("--delay", eo.delay, "Run no earlier than this from now (30s, 5m, 1h30m)");
    enqueue->add_option("--at", eo.at, "Run no earlier than this time: 2026-11-29T10:00:00Z (UTC) or unix seconds");
    enqueue->add_option("--unique", eo.unique_key, "Refuse if a job of this type with this key is pending or running");

    cli::ListOptions lo;
    auto* jobs = app.add_subcommand("jobs", "List jobs in the store, newest first");
    add_common(*jobs, opts, level, {.json = true});
    jobs->add_option("--type", lo.type, "Only this job type");
    jobs->add_option("--state", lo.state, "scheduled, ready, reserved, running, done or dead");
    jobs->add_option("--limit", lo.limit, "At most this many (default 50)");

    std::string job_id;
    auto* job = app.add_subcommand("job", "Show one job: payload, attempts and errors");
    add_common(*job, opts, level, {.json = true});
    job->add_option("id", job_id, "Job id")->required();

    cli::DlqOptions dq;
    std::string dlq_id;
    auto* dlq = app.add_subcommand("dlq", "Inspect, retry and purge the dead-letter queue");
    dlq->require_subcommand(1);
    auto* dlq_list = dlq->add_subcommand("list", "List dead letters");
    add_common(*dlq_list, opts, level, {.json = true});
    dlq_list->add_option("--type", dq.type, "Only this job type");
    auto* dlq_show = dlq->add_subcommand("show", "Show one dead letter with every attempt's error");
    add_common(*dlq_show, opts, level, {.json = true});
    dlq_show->add_option("id", dlq_id, "Job id")->required();
    auto* dlq_retry =
        dlq->add_subcommand("retry", "Put dead letters back to ready with a fresh set of attempts, history kept");
    add_common(*dlq_retry, opts, level, {});
    dlq_retry->add_option("ids", dq.ids, "Job ids");
    dlq_retry->add_flag("--all", dq.all, "Every dead letter (of --type)");
    dlq_retry->add_option("--type", dq.type, "With --all: only this job type");
    auto* dlq_purge = dlq->add_subcommand("purge", "Delete dead letters");
    add_common(*dlq_purge, opts, level, {});
    dlq_purge->add_option("ids", dq.ids, "Job ids");
    dlq_purge->add_flag("--all", dq.all, "Every dead letter (of --type, --older-than)");
    dlq_purge->add_option("--type", dq.type, "With --all: only this job type");
    dlq_purge->add_option("--older-than", dq.older_than, "With --all: only those dead for longer than this (7d, 12h)");

    std::string status_url;
    auto* status = app.add_subcommand("status", "Health, alerts and a table of job types from a running host");
    add_common(*status, opts, level, {.plugin_dir = false, .json = true, .store = false});
    status->add_option("--url", status_url,
                       "The host's address, such as http://127.0.0.1:8080 (default: [http] listen)");

    std::string reload_url;
    auto* reload =
        app.add_subcommand("reload", "Ask a running host to rescan its plugin folder now (it also watches it)");
    add_common(*reload, opts, level, {.plugin_dir = false, .store = false});
    reload->add_option("--url", reload_url, "The host's address (default: [http] listen)");

    std::string new_type;
    std::optional<std::filesystem::path> new_dir;
    auto* scaffold = app.add_subcommand("new", "Write a ready out-of-tree plugin project for a new job type");
    scaffold->add_option("type", new_type, "The job type, such as image.resize")->required();
    scaffold->add_option("--dir", new_dir, "Where to create the project's folder (default: here)");

    auto* help = app.add_subcommand("help", "Print this help");

    // Bare `jobhost` does nothing on its own: without a config it would create ./var and listen on 8080 by surprise.
    if (argc == 1) {
        std::cerr << app.help()
                  << "\njobhost: give a command, for example: jobhost run --config "
                     "config/jobhost.toml\n";
        return cli::kExitUsage;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        return code == 0 ? cli::kExitOk : cli::kExitUsage;
    }
    if (!level.empty()) opts.log_level = log::parse_level(level);

    if (*help) {
        std::cout << app.help();
        return cli::kExitOk;
    }
    try {
        if (*scaffold) return cli::new_command(new_type, new_dir);
        if (*plugins) return cli::plugins_command(opts);
        if (*check) return cli::check_command(opts);
        if (*status) return cli::status_command(opts, status_url);
        if (*reload) return cli::reload_command(opts, reload_url);
        if (*enqueue) return cli::enqueue_command(opts, eo);
        if (*jobs) return cli::jobs_command(opts, lo);
        if (*job) return cli::job_command(opts, job_id);
        if (*dlq_list) return cli::dlq_list_command(opts, dq);
        if (*dlq_show) return cli::dlq_show_command(opts, dlq_id);
        if (*dlq_retry) return cli::dlq_retry_command(opts, dq);
        if (*dlq_purge) return cli::dlq_purge_command(opts, dq);
        return cli::run_command(opts);
    } catch (const std::exception& e) {
        std::cerr << "jobhost: fatal: " << e.what() << "\n";
        return cli::kExitRuntime;
    }
}
