// jobhost/testing.hpp: a plugin author's Task run without a host, through the same adapter the host calls.
#include <jobhost/testing.hpp>

#include <doctest/doctest.h>

namespace {

// Greets payload.name with settings.greeting; reports progress, queues a follow-up, honours cancellation, and fails
// (without retry) for a payload of "no-retry".
class Greeter : public jobhost::Task {
public:
    jobhost::Result validate_config(const boost::json::object& settings) override {
        if (auto* g = settings.if_contains("greeting")) {
            if (!g->is_string()) return jobhost::Result::failure("greeting must be a string");
            greeting_ = std::string(g->as_string());
        }
        return jobhost::Result::success();
    }
    jobhost::Result execute(jobhost::Context& ctx) override {
        if (ctx.payload_text() == "\"no-retry\"") return jobhost::Result::failure("refused");
        ctx.progress(50, "halfway");
        if (ctx.cancelled()) return jobhost::Result::failure("cancelled at attempt " + std::to_string(ctx.attempt()));
        std::string name(ctx.payload().as_object().at("name").as_string());
        ctx.log().info("greeting " + name);
        auto follow = ctx.enqueue("audit", R"({"greeted":")" + name + "\"}", {.unique_key = name});
        if (!follow.ok) return jobhost::Result::failure("could not queue the audit: " + follow.error);
        ctx.progress(100);
        return jobhost::Result::success(greeting_ + " " + name, boost::json::object{{"name", name}});
    }
    bool should_retry(jobhost::Context& ctx, const jobhost::Error&) override {
        return ctx.payload_text() != "\"no-retry\"";
    }

private:
    std::string greeting_ = "hello";
};

} // namespace

TEST_CASE("the SDK's TaskRunner runs a Task without a host and records what the run did") {
    auto runner = jobhost::testing::TaskRunner::make<Greeter>({{"greeting", "hi"}}, "greet");
    auto run = runner.run({.payload = R"({"name":"ada"})"});
    CHECK(run.ok());
    CHECK(run.message == "hi ada");
    CHECK(run.output_json() == boost::json::value(boost::json::object{{"name", "ada"}}));
    REQUIRE(run.progress.size() == 2);
    CHECK(run.progress[0].percent == 50);
    CHECK(run.progress[0].message == "halfway");
    CHECK(run.progress[1].percent == 100);
    REQUIRE(run.enqueued.size() == 1);
    CHECK(run.enqueued[0].type == "audit");
    CHECK(run.enqueued[0].payload == R"({"greeted":"ada"})");
    CHECK(run.enqueued[0].unique_key == "ada");
    REQUIRE(run.logs.size() == 1);
    CHECK(run.logs[0].message == "greeting ada");

    // cancellation and the attempt, as the host would pass them
    auto cancelled = runner.run({.payload = R"({"name":"bob"})", .attempt = 3, .cancelled = [] { return true; }});
    CHECK_FALSE(cancelled.ok());
    CHECK(cancelled.retryable());
    CHECK(cancelled.message == "cancelled at attempt 3");

    // should_retry said no
    auto refused = runner.run({.payload = "\"no-retry\""});
    CHECK_FALSE(refused.ok());
    CHECK_FALSE(refused.retryable());
    CHECK(refused.no_retry);

    // an enqueue the host refuses is the task's to handle
    runner.refuse_enqueues("unknown job type 'audit'");
    auto no_audit = runner.run({.payload = R"({"name":"cy"})"});
    CHECK(no_audit.message == "could not queue the audit: unknown job type 'audit'");

    // an exception is a failed run, as in the host
    auto broken = runner.run({.payload = R"({"nom":"dd"})"});
    CHECK(broken.retryable());
    CHECK(broken.message.rfind("exception: ", 0) == 0);

    // a batch: one result per job
    runner.refuse_enqueues("");
    auto batch = runner.run_batch({{.payload = R"({"name":"e"})"}, {.payload = "\"no-retry\""}});
    REQUIRE(batch.size() == 2);
    CHECK(batch[0].ok());
    CHECK(batch[1].no_retry);
}

TEST_CASE("the SDK's TaskRunner refuses settings the task refuses, with the host's message") {
    CHECK_THROWS_WITH(jobhost::testing::TaskRunner::make<Greeter>({{"greeting", 5}}),
                      "the task could not be made: validate_config: greeting must be a string");
}
