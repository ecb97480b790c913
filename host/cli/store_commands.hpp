// The subcommands that work on the store file, whether or not a host is running: enqueue, jobs, job, dlq.
// Exit codes: 0 done, 1 the store cannot be used (missing, locked, corrupt), 2 bad input (unknown id or type,
// invalid JSON, bad option); on any error nothing is changed.
#pragma once

#include "cli/commands.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace jobhost::cli {

struct EnqueueOptions {
    std::string type;
    std::optional<std::string> payload;
    std::optional<std::string> payload_file;
    std::optional<std::string> jsonl; // one job per line: its payload
    std::optional<std::string> priority;
    std::optional<std::string> delay;
    std::optional<std::string> at;
    std::string unique_key;
};

struct ListOptions {
    std::optional<std::string> type;
    std::optional<std::string> state;
    std::size_t limit = 50;
};

struct DlqOptions {
    std::vector<std::string> ids;
    bool all = false;
    std::optional<std::string> type;
    std::optional<std::string> older_than;
};

int enqueue_command(const CommonOptions& common, const EnqueueOptions& options);
int jobs_command(const CommonOptions& common, const ListOptions& options);
int job_command(const CommonOptions& common, const std::string& id);
int dlq_list_command(const CommonOptions& common, const DlqOptions& options);
int dlq_show_command(const CommonOptions& common, const std::string& id);
int dlq_retry_command(const CommonOptions& common, const DlqOptions& options);
int dlq_purge_command(const CommonOptions& common, const DlqOptions& options);

} // namespace jobhost::cli
