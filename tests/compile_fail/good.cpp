// Must compile: the control for the two files beside it, with the same command.
#include <jobhost/sdk.hpp>

using namespace std::chrono_literals;

class Report : public jobhost::Task {
public:
    jobhost::Result execute(jobhost::Context&) override { return jobhost::Result::success(); }
};
JOBHOST_JOB(Report, .type = "report.nightly-v2_x", .cron = "30 2 * * *");
