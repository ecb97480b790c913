#include "registry/registry.hpp"

#include "runner/process_runner.hpp"

#include <boost/json/serialize.hpp>

namespace jobhost::registry {

JobSettings effective_settings(const loader::DiscoveredType& t, const config::Config& config, Provenance& provenance) {
    JobSettings s = settings_from_descriptor(t.descriptor);
    if (config.host.isolation != s.isolation) {
        s.isolation = config.host.isolation;
        provenance.fields.emplace_back("isolation", config.file.string() + ":[host]");
    }
    auto it = config.jobs.find(t.type);
    if (it != config.jobs.end()) {
        std::string where = config.file.string() + ":" + std::to_string(it->second.line);
        std::map<std::string, std::string> key_where; // each key's own line, not its table's
        for (const auto& [key, line] : it->second.key_lines)
            key_where[key] = config.file.string() + ":" + std::to_string(line);
        apply_override(s, it->second.overrides, where, provenance, &key_where);
    }
    return s;
}

JobType Registry::make(const loader::DiscoveredType& t, const config::Config& config, const BuildOptions& options,
                       std::vector<loader::Problem>& problems) {
    JobType jt;
    jt.type = t.type;
    jt.file = t.file;
    jt.abi_version = t.abi_version;
    jt.declared = settings_from_descriptor(t.descriptor);
    jt.effective = effective_settings(t, config, jt.provenance);
    if (auto it = config.jobs.find(t.type); it != config.jobs.end()) jt.settings = it->second.settings;

    auto errors = validate_settings(jt.effective);
    if (!errors.empty()) {
        jt.error = "invalid effective settings: " + errors.front();
        problems.push_back({t.file, t.type, jt.error});
        return jt;
    }
    std::string settings_json = boost::json::serialize(jt.settings);
    if (jt.effective.isolation == runner::Isolation::process) {
        runner::ProcessSpec spec;
        spec.type = t.type;
        spec.file = t.file;
        spec.library_fd = t.library ? t.library->private_copy : -1;
        spec.settings_json = settings_json;
        spec.exe = options.worker_exe;
        spec.memory_limit = jt.effective.memory_limit;
        auto r = runner::ProcessRunner::start(std::move(spec));
        if (!r) {
            jt.error = "the task could not be created (in a worker process): " + r.error().message;
            problems.push_back({t.file, t.type, jt.error + "; the type is disabled"});
        } else {
            jt.task = std::move(*r);
        }
        return jt;
    }
    auto handle = std::make_unique<loader::TypeHandle>(t.type);
    jh_task_config cfg{};
    cfg.struct_size = sizeof cfg;
    cfg.type = jh_str{jt.type.data(), jt.type.size()};
    cfg.settings_json = jh_str{settings_json.data(), settings_json.size()};
    cfg.host = loader::host_api();
    cfg.host_handle = handle.get();
    void* task = nullptr;
    char error[1024] = {};
    jh_status s = t.descriptor.create(&cfg, &task, error, sizeof error);
    if (s != JH_OK || !task) {
        jt.error = std::string("the task could not be created: ") + (error[0] ? error : "no reason given");
        problems.push_back({t.file, t.type, jt.error + "; the type is disabled"});
    } else {
        jt.task = std::make_shared<TaskInstance>(t.library, t.descriptor, std::move(handle), task);
    }
    return jt;
}

BuildResult Registry::build(const loader::Discovery& discovery, const config::Config& config,
                            const BuildOptions& options) {
    BuildResult result;
    for (const auto& t : discovery.types) put(make(t, config, options, result.problems));
    return result;
}

void Registry::put(JobType type) {
    auto it = types_.find(type.type);
    if (it == types_.end()) {
        std::string name = type.type;
        types_.emplace(std::move(name), std::move(type));
        return;
    }
    type.generation = it->second.generation + 1;
    it->second = std::move(type);
}

void Registry::retire(std::string_view type, std::string reason) {
    auto it = types_.find(type);
    if (it == types_.end()) return;
    it->second.task.reset();
    it->second.error = std::move(reason);
}

const JobType* Registry::find(std::string_view type) const {
    auto it = types_.find(type);
    return it == types_.end() ? nullptr : &it->second;
}

} // namespace jobhost::registry
