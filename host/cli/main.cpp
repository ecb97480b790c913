// jobhost: loads job types from shared libraries and runs their jobs.
#include "cli/commands.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

using namespace jobhost;

namespace {

void add_common(CLI::App& app, cli::CommonOptions& o, std::string& level, bool with_plugin_dir, bool with_json) {
    app.add_option("-c,--config", o.config, "Configuration file (TOML); without it, defaults and ./plugins")
        ->check(CLI::ExistingFile);
    if (with_plugin_dir) app.add_option("--plugin-dir", o.plugin_dir, "Plugin folder, overriding [host] plugin_dir");
    app.add_option("--log-level", level, "trace, debug, info, warning or error, overriding [log] level")
        ->check(CLI::IsMember({"trace", "debug", "info", "warning", "error"}));
    app.add_flag("--strict", o.strict, "Treat any plugin problem as fatal (exit 2)");
    if (with_json) app.add_flag("--json", o.json, "Print JSON instead of a table");
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"jobhost: runs jobs whose types are loaded from shared-library plugins.\n"
                 "Exit codes: 0 clean, 1 runtime failure, 2 usage or configuration error.",
                 "jobhost"};
    app.set_version_flag("-V,--version", std::string("jobhost ") + JOBHOST_VERSION);
    app.require_subcommand(0, 1);

    cli::CommonOptions opts;
    std::string level;
    add_common(app, opts, level, true, false);

    auto* run = app.add_subcommand("run", "Load plugins and serve until SIGINT or SIGTERM (the default)");
    add_common(*run, opts, level, true, false);
    run->add_option("--enqueue", opts.enqueue, "Queue a job at start-up: TYPE or TYPE=JSON (repeatable)");
    auto* plugins =
        app.add_subcommand("plugins", "List discovered job types, their effective settings, and skipped files");
    add_common(*plugins, opts, level, true, true);
    auto* check = app.add_subcommand("check", "Validate the configuration against the discovered plugins; run nothing");
    add_common(*check, opts, level, true, false);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        int code = app.exit(e);
        return code == 0 ? cli::kExitOk : cli::kExitUsage;
    }
    if (!level.empty()) opts.log_level = log::parse_level(level);

    try {
        if (*plugins) return cli::plugins_command(opts);
        if (*check) return cli::check_command(opts);
        return cli::run_command(opts);
    } catch (const std::exception& e) {
        std::cerr << "jobhost: fatal: " << e.what() << "\n";
        return cli::kExitRuntime;
    }
}
