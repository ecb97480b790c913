// hello: a periodic job that logs a greeting. The smallest useful plugin.
#include <jobhost/sdk.hpp>

using namespace std::chrono_literals;

class Hello : public jobhost::Task {
public:
    jobhost::Result validate_config(const boost::json::object& settings) override {
        if (auto* who = settings.if_contains("greeting")) {
            if (!who->is_string()) return jobhost::Result::failure("settings.greeting must be a string");
            greeting_ = std::string(who->as_string());
        }
        return jobhost::Result::success();
    }

    jobhost::Result execute(jobhost::Context& ctx) override {
        ctx.log().info(greeting_ + " (attempt " + std::to_string(ctx.attempt()) + ")");
        return jobhost::Result::success(greeting_);
    }

private:
    std::string greeting_ = "hello from jobhost"; // written once in validate_config, read-only afterwards
};

JOBHOST_JOB(Hello, .type = "hello", .name = "Hello", .description = "Logs a greeting on a schedule", .version = "1.0.0",
            .interval = 10s);
