// toolbox: text job types. Each takes a JSON payload and returns its result as the job's output.
#include <jobhost/sdk.hpp>

#include <algorithm>
#include <cctype>

// text.upper: {"text": "..."} -> {"text": "..."} upper-cased. A payload without a string "text" fails permanently:
// retrying cannot fix a malformed payload.
class TextUpper : public jobhost::Task {
public:
    jobhost::Result validate(jobhost::Context& ctx) override {
        const auto& p = ctx.payload();
        if (!p.is_object() || !p.as_object().contains("text") || !p.as_object().at("text").is_string())
            return jobhost::Result::permanent("payload must be an object with a string \"text\"");
        return jobhost::Result::success();
    }
    jobhost::Result execute(jobhost::Context& ctx) override {
        std::string s(ctx.payload().as_object().at("text").as_string());
        std::transform(s.begin(), s.end(), s.begin(),
                       [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
        return jobhost::Result::success({}, boost::json::object{{"text", s}});
    }
};
JOBHOST_JOB(TextUpper, .type = "text.upper", .name = "Upper-case text", .description = "Upper-cases payload.text",
            .priority = jobhost::Priority::high, .concurrency = 4);

// text.count: counts words across a batch of payloads, one result per job.
class TextCount : public jobhost::Task {
public:
    jobhost::Result execute(jobhost::Context& ctx) override {
        const auto& p = ctx.payload();
        if (!p.is_string()) return jobhost::Result::permanent("payload must be a JSON string");
        std::size_t words = 0;
        bool in_word = false;
        for (char c : p.as_string()) {
            bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
            if (!space && !in_word) ++words;
            in_word = !space;
        }
        return jobhost::Result::success({}, boost::json::object{{"words", words}});
    }
};
JOBHOST_JOB(TextCount, .type = "text.count", .name = "Count words", .description = "Counts the words of a string",
            .batch_size = 16);
