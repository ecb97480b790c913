#include "scheduler/cron.hpp"

#include <array>
#include <cctype>
#include <ctime>
#include <vector>

namespace jobhost::scheduler {

namespace {

struct FieldSpec {
    const char* name;
    int min;
    int max;
    const std::array<const char*, 13>* names; // index = value
};

constexpr std::array<const char*, 13> kMonths{"",    "jan", "feb", "mar", "apr", "may", "jun",
                                              "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::array<const char*, 13> kDays{"sun", "mon", "tue", "wed", "thu", "fri", "sat", "", "", "", "", "", ""};

std::optional<int> parse_value(std::string_view s, const FieldSpec& spec) {
    if (s.empty()) return std::nullopt;
    if (std::isdigit(static_cast<unsigned char>(s[0]))) {
        int v = 0;
        for (char c : s) {
            if (!std::isdigit(static_cast<unsigned char>(c)) || v > 1000) return std::nullopt;
            v = v * 10 + (c - '0');
        }
        return v;
    }
    if (spec.names && s.size() == 3) {
        std::string lower;
        for (char c : s) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        for (int i = 0; i < 13; ++i)
            if ((*spec.names)[i][0] && lower == (*spec.names)[i]) return i;
    }
    return std::nullopt;
}

// Sets bits[v] for each value the field selects; returns an error message or empty.
std::string parse_field(std::string_view field, const FieldSpec& spec, std::vector<bool>& bits) {
    bits.assign(spec.max + 1, false);
    std::size_t pos = 0;
    while (pos <= field.size()) {
        std::size_t comma = field.find(',', pos);
        std::string_view part =
            field.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
        if (part.empty()) return std::string("empty list item in ") + spec.name + " field";
        int step = 1;
        std::size_t slash = part.find('/');
        std::string_view range = part.substr(0, slash);
        if (slash != std::string_view::npos) {
            auto s = parse_value(part.substr(slash + 1), FieldSpec{spec.name, 1, 1000, nullptr});
            if (!s || *s < 1)
                return std::string("bad step '") + std::string(part.substr(slash + 1)) + "' in " + spec.name + " field";
            step = *s;
        }
        int lo = spec.min, hi = spec.max;
        if (range == "*") {
            // whole range
        } else {
            std::size_t dash = range.find('-');
            auto a = parse_value(range.substr(0, dash), spec);
            if (!a)
                return std::string("bad value '") + std::string(range.substr(0, dash)) + "' in " + spec.name + " field";
            lo = *a;
            if (dash != std::string_view::npos) {
                auto b = parse_value(range.substr(dash + 1), spec);
                if (!b)
                    return std::string("bad value '") + std::string(range.substr(dash + 1)) + "' in " + spec.name +
                           " field";
                hi = *b;
            } else {
                hi = slash != std::string_view::npos ? spec.max : lo;
            }
            if (lo < spec.min || hi > spec.max || lo > hi)
                return std::string(spec.name) + " field '" + std::string(range) + "' is outside " +
                       std::to_string(spec.min) + "-" + std::to_string(spec.max);
        }
        for (int v = lo; v <= hi; v += step) bits[v] = true;
        if (comma == std::string_view::npos) break;
        pos = comma + 1;
    }
    return {};
}

std::tm to_tm(std::time_t t) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    return tm;
}

} // namespace

core::Expected<CronExpression> CronExpression::parse(std::string_view text) {
    std::string expr(text);
    static const std::array<std::pair<const char*, const char*>, 7> kAliases{{{"@yearly", "0 0 1 1 *"},
                                                                              {"@annually", "0 0 1 1 *"},
                                                                              {"@monthly", "0 0 1 * *"},
                                                                              {"@weekly", "0 0 * * 0"},
                                                                              {"@daily", "0 0 * * *"},
                                                                              {"@midnight", "0 0 * * *"},
                                                                              {"@hourly", "0 * * * *"}}};
    if (!expr.empty() && expr[0] == '@') {
        bool found = false;
        for (const auto& [alias, full] : kAliases) {
            if (expr == alias) {
                expr = full;
                found = true;
            }
        }
        if (!found)
            return core::Error{"unknown cron alias '" + expr +
                               "' (known: @yearly @annually @monthly @weekly @daily @midnight @hourly)"};
    }
    std::vector<std::string_view> fields;
    std::string_view rest(expr);
    while (!rest.empty()) {
        std::size_t start = rest.find_first_not_of(" \t");
        if (start == std::string_view::npos) break;
        rest.remove_prefix(start);
        std::size_t end = rest.find_first_of(" \t");
        fields.push_back(rest.substr(0, end));
        if (end == std::string_view::npos) break;
        rest.remove_prefix(end);
    }
    if (fields.size() != 5)
        return core::Error{"a cron expression has 5 fields (minute hour day-of-month month day-of-week), '" +
                           std::string(text) + "' has " + std::to_string(fields.size())};
    static const FieldSpec specs[5] = {{"minute", 0, 59, nullptr},
                                       {"hour", 0, 23, nullptr},
                                       {"day-of-month", 1, 31, nullptr},
                                       {"month", 1, 12, &kMonths},
                                       {"day-of-week", 0, 7, &kDays}};
    CronExpression c;
    c.text_ = std::string(text);
    std::vector<bool> bits;
    for (int f = 0; f < 5; ++f) {
        if (auto err = parse_field(fields[f], specs[f], bits); !err.empty()) return core::Error{err};
        for (int v = 0; v < static_cast<int>(bits.size()); ++v) {
            if (!bits[v]) continue;
            switch (f) {
            case 0: c.minutes_.set(v); break;
            case 1: c.hours_.set(v); break;
            case 2: c.days_.set(v); break;
            case 3: c.months_.set(v); break;
            case 4: c.weekdays_.set(v % 7); break;
            }
        }
    }
    c.dom_restricted_ = fields[2][0] != '*';
    c.dow_restricted_ = fields[4][0] != '*';
    return c;
}

bool CronExpression::day_matches(int mday, int wday) const {
    bool dom = days_.test(mday);
    bool dow = weekdays_.test(wday);
    if (dom_restricted_ && dow_restricted_) return dom || dow;
    return dom && dow;
}

std::optional<CronExpression::TimePoint> CronExpression::next_after(TimePoint after) const {
    using namespace std::chrono;
    std::time_t t = system_clock::to_time_t(time_point_cast<seconds>(after));
    t = t - (t % 60) + 60; // next whole minute
    const std::time_t limit = t + 8LL * 366 * 86400;
    while (t < limit) {
        std::tm tm = to_tm(t);
        if (!months_.test(tm.tm_mon + 1)) {
            tm.tm_mon += 1;
            tm.tm_mday = 1;
            tm.tm_hour = 0;
            tm.tm_min = 0;
            tm.tm_sec = 0;
            t = timegm(&tm);
            continue;
        }
        if (!day_matches(tm.tm_mday, tm.tm_wday)) {
            tm.tm_mday += 1;
            tm.tm_hour = 0;
            tm.tm_min = 0;
            tm.tm_sec = 0;
            t = timegm(&tm);
            continue;
        }
        if (!hours_.test(tm.tm_hour)) {
            t += 3600 - tm.tm_min * 60;
            continue;
        }
        if (!minutes_.test(tm.tm_min)) {
            t += 60;
            continue;
        }
        return system_clock::from_time_t(t);
    }
    return std::nullopt;
}

} // namespace jobhost::scheduler
