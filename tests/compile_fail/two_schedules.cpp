// Must not compile: both an interval and a cron. tests/CMakeLists.txt checks the compiler's message.
#include <jobhost/sdk.hpp>

using namespace std::chrono_literals;

class Report : public jobhost::Task {
public:
    jobhost::Result execute(jobhost::Context&) override { return jobhost::Result::success(); }
};
JOBHOST_JOB(Report, .type = "report", .interval = 10s, .cron = "30 2 * * *");
