// What the fuzz targets assert: a property that fails aborts with the input's story, so libFuzzer keeps the input
// and the replay driver names the file.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

#define FUZZ_CHECK(cond, what)                                                                                         \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            std::fprintf(stderr, "fuzz property failed: %s (%s) at %s:%d\n", std::string(what).c_str(), #cond,         \
                         __FILE__, __LINE__);                                                                          \
            std::abort();                                                                                              \
        }                                                                                                              \
    } while (0)
