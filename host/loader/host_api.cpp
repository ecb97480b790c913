#include "loader/host_api.hpp"

#include "log/log.hpp"

#include <algorithm>
#include <cstring>

namespace jobhost::loader {

namespace {

log::Level to_level(std::int32_t level) {
    return static_cast<log::Level>(std::clamp<std::int32_t>(level, JH_LOG_TRACE, JH_LOG_ERROR));
}

std::string_view view(jh_str s) {
    return s.data ? std::string_view(s.data, s.size) : std::string_view();
}

void copy_out(char* buf, std::size_t cap, const std::string& s) {
    if (!buf || cap == 0) return;
    std::size_t n = std::min(s.size(), cap - 1);
    std::memcpy(buf, s.data(), n);
    buf[n] = '\0';
}

void c_log(void* handle, std::int32_t level, jh_str message) {
    if (handle) static_cast<PluginHandle*>(handle)->log(level, view(message));
}
std::int32_t c_cancelled(void* handle) {
    return handle && static_cast<PluginHandle*>(handle)->cancelled() ? 1 : 0;
}
void c_progress(void* handle, std::int32_t percent, jh_str message) {
    if (handle) static_cast<PluginHandle*>(handle)->progress(percent, view(message));
}
jh_status c_enqueue(void* handle, jh_str type, jh_str payload, const jh_enqueue_options* options, char* id_out,
                    std::size_t id_cap, char* error, std::size_t error_cap) {
    if (!handle) return JH_INVALID;
    std::string id, err;
    jh_status s;
    try {
        s = static_cast<PluginHandle*>(handle)->enqueue(view(type), view(payload), options, id, err);
    } catch (const std::exception& e) {
        s = JH_FAILED;
        err = e.what();
    }
    copy_out(id_out, id_cap, id);
    copy_out(error, error_cap, err);
    return s;
}
void c_set_result(void* handle, jh_status status, std::uint32_t flags, jh_str message, jh_str output) {
    if (handle) static_cast<PluginHandle*>(handle)->set_result(status, flags, view(message), view(output));
}

const jh_host_api kApi{sizeof(jh_host_api), JOBHOST_ABI_VERSION, &c_log,       &c_cancelled,
                       &c_progress,         &c_enqueue,          &c_set_result};

} // namespace

void TypeHandle::log(std::int32_t level, std::string_view message) {
    log::write(to_level(level), "plugin", message, type_);
}

const jh_host_api* host_api() noexcept {
    return &kApi;
}

} // namespace jobhost::loader
