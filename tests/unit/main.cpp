#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "log/log.hpp"

// The unit tests log only errors, so that a failure's output is the failure.
int main(int argc, char** argv) {
    jobhost::log::configure({jobhost::log::Level::error, jobhost::log::Format::text, std::nullopt});
    return doctest::Context(argc, argv).run();
}
