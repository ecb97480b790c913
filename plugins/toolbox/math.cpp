// toolbox: arithmetic job types.
#include <jobhost/sdk.hpp>

using namespace std::chrono_literals;

// math.sum: [1, 2, 3] -> {"sum": 6}
class MathSum : public jobhost::Task {
public:
    jobhost::Result execute(jobhost::Context& ctx) override {
        const auto& p = ctx.payload();
        if (!p.is_array()) return jobhost::Result::permanent("payload must be a JSON array of numbers");
        double sum = 0;
        for (const auto& v : p.as_array()) {
            if (!v.is_number()) return jobhost::Result::permanent("payload must hold only numbers");
            sum += v.to_number<double>();
        }
        return jobhost::Result::success({}, boost::json::object{{"sum", sum}});
    }
};
JOBHOST_JOB(MathSum, .type = "math.sum", .name = "Sum", .description = "Adds the numbers of a JSON array",
            .max_retries = 0, .concurrency = 2);

// math.report: a nightly cron job that logs how it was configured.
class MathReport : public jobhost::Task {
public:
    jobhost::Result execute(jobhost::Context& ctx) override {
        ctx.log().info("nightly report, settings " + boost::json::serialize(ctx.settings()));
        return jobhost::Result::success();
    }
};
JOBHOST_JOB(MathReport, .type = "math.report", .name = "Nightly report", .description = "Runs at 02:30 UTC",
            .cron = "30 2 * * *", .priority = jobhost::Priority::low);
