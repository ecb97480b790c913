// In the fuzz preset, Boost.JSON's own code is compiled here with the fuzzer's coverage instrumentation, so that the
// targets that parse JSON (payload, http, jsonl) are guided by its branches too; Debian's libboost_json is built
// without it, and a fuzzer that cannot see the parser's branches only tries random bytes. The definitions here take
// precedence over the shared library's (same Boost version, same headers).
#include <boost/json/src.hpp>
