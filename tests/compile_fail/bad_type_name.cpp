// Must not compile: a job type with a space and capitals. tests/CMakeLists.txt checks the compiler's message.
#include <jobhost/sdk.hpp>

class ImageResize : public jobhost::Task {
public:
    jobhost::Result execute(jobhost::Context&) override { return jobhost::Result::success(); }
};
JOBHOST_JOB(ImageResize, .type = "Image Resize");
