// The jh_host_api table that plugins call into. Every `handle` the host passes to a plugin points to a PluginHandle;
// the table's C functions forward to its virtual methods, so one static table serves type-level calls (logging from
// validate_config) and job-level calls (the executor's RunningJob) alike.
#pragma once

#include <jobhost/abi.h>

#include <string>
#include <string_view>

namespace jobhost::loader {

class PluginHandle {
public:
    virtual ~PluginHandle() = default;
    virtual void log(std::int32_t level, std::string_view message) = 0;
    virtual bool cancelled() { return false; }
    virtual void progress(std::int32_t percent, std::string_view message) {
        (void)percent;
        (void)message;
    }
    // Returns JH_OK and the id, or another status and the reason.
    virtual jh_status enqueue(std::string_view type, std::string_view payload, const jh_enqueue_options* options,
                              std::string& id, std::string& error) {
        (void)type;
        (void)payload;
        (void)options;
        (void)id;
        error = "enqueue is only available inside a run";
        return JH_NOT_SUPPORTED;
    }
    virtual void set_result(jh_status status, std::uint32_t flags, std::string_view message, std::string_view output) {
        (void)status;
        (void)flags;
        (void)message;
        (void)output;
    }
};

// The handle of a job type outside any run: logs tagged with the type.
class TypeHandle final : public PluginHandle {
public:
    explicit TypeHandle(std::string type) : type_(std::move(type)) {}
    void log(std::int32_t level, std::string_view message) override;
    const std::string& type() const noexcept { return type_; }

private:
    std::string type_;
};

// The one table; valid for the life of the process.
const jh_host_api* host_api() noexcept;

} // namespace jobhost::loader
