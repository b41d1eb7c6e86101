// kill -9 durability: a child process commits turns in a loop and reports each acknowledged
// turn over a pipe; the parent SIGKILLs it at a random moment, reopens the store and checks
// that every acknowledged turn is there, complete, and consistent with the session record.
//
// The child is this same test binary, exec'd right after fork() to run the disabled writer
// test below: a fresh process, so it does not inherit the parent's RocksDB threads and locks.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "store/rocks_store.h"
#include "tests/unit/store_test_support.h"

extern char** environ;

namespace gistmem::store {
namespace {

using testing::MakeSession;
using testing::NextExchange;

constexpr char kDirEnv[] = "GISTMEM_CRASH_WRITER_DIR";
constexpr char kSessionEnv[] = "GISTMEM_CRASH_WRITER_SESSION";
constexpr char kFdEnv[] = "GISTMEM_CRASH_WRITER_FD";
constexpr size_t kPayloadSize = 4096;
constexpr char kTenant[] = "crash";

// The child: commits exchanges until killed, writing the last turn index of each acknowledged
// commit to the pipe. Skipped unless the parent test started it.
TEST(StoreCrashTest, DISABLED_WriterChild) {
  const char* dir = std::getenv(kDirEnv);
  const char* session_id = std::getenv(kSessionEnv);
  const char* fd_text = std::getenv(kFdEnv);
  if (dir == nullptr || session_id == nullptr || fd_text == nullptr) {
    GTEST_SKIP() << "run by StoreCrashTest.AcknowledgedTurnsSurviveKill9";
  }
  const int ack_fd = std::atoi(fd_text);
  absl::StatusOr<std::unique_ptr<RocksStore>> store = RocksStore::Open(dir);
  if (!store.ok()) _exit(2);
  absl::StatusOr<SessionRecord> record = (*store)->GetSession(kTenant, session_id);
  if (record.status().code() == absl::StatusCode::kNotFound) {
    record = MakeSession(kTenant, session_id);
    if (!(*store)->CreateSession(*record).ok()) _exit(3);
  }
  if (!record.ok()) _exit(4);
  // Bounded, in case the parent never kills it.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < give_up) {
    const TurnCommit commit = NextExchange(*record, kPayloadSize);
    if (!(*store)->CommitTurn(commit).ok()) _exit(5);
    const int64_t acknowledged = commit.turns.back().turn_index();
    if (write(ack_fd, &acknowledged, sizeof acknowledged) != sizeof acknowledged) _exit(6);
    *record = commit.session;
  }
  _exit(7);
}

// Starts the writer child; returns its pid and the read end of its acknowledgement pipe.
std::pair<pid_t, int> SpawnWriter(const std::string& dir, const std::string& session_id) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) return {-1, -1};
  fcntl(pipe_fds[0], F_SETFD, FD_CLOEXEC);
  // Everything the child needs is built before fork(): after it, only async-signal-safe calls.
  std::vector<std::string> args = {"/proc/self/exe",
                                   "--gtest_filter=StoreCrashTest.DISABLED_WriterChild",
                                   "--gtest_also_run_disabled_tests"};
  std::vector<std::string> env = {std::string(kDirEnv) + "=" + dir,
                                  std::string(kSessionEnv) + "=" + session_id,
                                  std::string(kFdEnv) + "=" + std::to_string(pipe_fds[1])};
  for (char** entry = environ; *entry != nullptr; ++entry) {
    if (std::strncmp(*entry, "GISTMEM_CRASH_WRITER_", 21) != 0) env.emplace_back(*entry);
  }
  std::vector<char*> argv;
  for (std::string& arg : args)
    argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& entry : env)
    envp.push_back(entry.data());
  envp.push_back(nullptr);

  const pid_t pid = fork();
  if (pid == 0) {
    // The child's gtest banner would only clutter the log; its stderr stays.
    const int dev_null = open("/dev/null", O_WRONLY);
    if (dev_null >= 0) dup2(dev_null, STDOUT_FILENO);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  close(pipe_fds[1]);
  return {pid, pipe_fds[0]};
}

struct WriterRun {
  std::vector<int64_t> acknowledged;
  bool killed = false;  // by our SIGKILL, not on its own
  std::string failure;
};

// Collects acknowledgements; kills the child `delay` after the first one (or after a long
// timeout if none comes), then drains what it wrote before dying.
WriterRun RunAndKill(pid_t pid, int ack_fd, std::chrono::milliseconds delay) {
  WriterRun run;
  std::string pending;
  using Clock = std::chrono::steady_clock;
  Clock::time_point kill_at = Clock::now() + std::chrono::seconds(30);
  bool kill_sent = false;
  while (true) {
    if (!kill_sent && Clock::now() >= kill_at) {
      kill(pid, SIGKILL);
      kill_sent = true;
    }
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(kill_at - Clock::now());
    pollfd poll_fd{ack_fd, POLLIN, 0};
    poll(&poll_fd, 1, kill_sent ? -1 : static_cast<int>(std::max<int64_t>(wait.count(), 0)));
    if (poll_fd.revents == 0) continue;
    char buffer[4096];
    const ssize_t got = read(ack_fd, buffer, sizeof buffer);
    if (got <= 0) break;  // the child is gone and everything it wrote is read
    pending.append(buffer, static_cast<size_t>(got));
    while (pending.size() >= sizeof(int64_t)) {
      int64_t index;
      std::memcpy(&index, pending.data(), sizeof index);
      pending.erase(0, sizeof index);
      if (run.acknowledged.empty() && !kill_sent) kill_at = Clock::now() + delay;
      run.acknowledged.push_back(index);
    }
  }
  close(ack_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  run.killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  if (!run.killed) run.failure = "writer exited on its own, status " + std::to_string(status);
  if (!pending.empty()) run.failure += "; partial acknowledgement in the pipe";
  return run;
}

// Everything the store holds for `session_id` is complete and matches the record.
void ExpectSessionIntact(RocksStore& store, const std::string& session_id,
                         int64_t last_acknowledged) {
  SCOPED_TRACE(session_id);
  absl::StatusOr<SessionRecord> record = store.GetSession(kTenant, session_id);
  ASSERT_TRUE(record.ok()) << record.status();
  EXPECT_GE(record->turn_count(), last_acknowledged + 1);
  EXPECT_EQ(record->next_kv_segment_seq(), static_cast<uint64_t>(record->turn_count()));

  absl::StatusOr<std::vector<TurnRecord>> transcript = store.LoadTranscript(kTenant, session_id);
  ASSERT_TRUE(transcript.ok()) << transcript.status();
  ASSERT_EQ(static_cast<int64_t>(transcript->size()), record->turn_count());
  for (int64_t i = 0; i < record->turn_count(); ++i) {
    const std::string text = (i % 2 == 0 ? "question " : "answer ") + std::to_string(i);
    EXPECT_EQ((*transcript)[i].SerializeAsString(), testing::MakeTurn(i, text).SerializeAsString())
        << "turn " << i;
  }

  // Gists at every even seq, and only the newest window.
  absl::StatusOr<std::vector<KvSegment>> segments = store.LoadKvSegments(kTenant, session_id);
  ASSERT_TRUE(segments.ok()) << segments.status();
  std::vector<uint64_t> expected_seqs;
  const uint64_t next = record->next_kv_segment_seq();
  for (uint64_t seq = 0; seq + 2 <= next; seq += 2)
    expected_seqs.push_back(seq);
  if (next > 0) expected_seqs.push_back(next - 1);
  std::vector<uint64_t> seqs;
  for (const KvSegment& segment : *segments) {
    seqs.push_back(segment.seq);
    EXPECT_EQ(segment.payload, testing::SegmentPayload(segment.seq, kPayloadSize))
        << "segment " << segment.seq;
  }
  EXPECT_EQ(seqs, expected_seqs);
}

TEST(StoreCrashTest, AcknowledgedTurnsSurviveKill9) {
  testing::TempDir dir;
  const std::string db = dir.db().string();
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 random(seed);
  std::uniform_int_distribution<int> delay_ms(0, 150);

  // Three sessions, each continued by several children: later children pick up where the
  // killed one stopped.
  std::map<std::string, int64_t> last_acknowledged;
  constexpr int kRounds = 10;
  for (int round = 0; round < kRounds; ++round) {
    const std::string session_id = "crash-" + std::to_string(round % 3);
    const std::chrono::milliseconds delay(round == 0 ? 0 : delay_ms(random));
    SCOPED_TRACE("round " + std::to_string(round) + ", kill after " +
                 std::to_string(delay.count()) + " ms");

    const auto [pid, ack_fd] = SpawnWriter(db, session_id);
    ASSERT_GT(pid, 0);
    const WriterRun run = RunAndKill(pid, ack_fd, delay);
    ASSERT_TRUE(run.killed) << run.failure;
    ASSERT_FALSE(run.acknowledged.empty()) << "the writer acknowledged nothing";
    for (size_t i = 1; i < run.acknowledged.size(); ++i) {
      ASSERT_EQ(run.acknowledged[i], run.acknowledged[i - 1] + 2);
    }
    last_acknowledged[session_id] = run.acknowledged.back();
    std::cout << "round " << round << ": " << session_id << " killed " << delay.count()
              << " ms after its first acknowledgement, " << run.acknowledged.size()
              << " commits acknowledged\n";

    absl::StatusOr<std::unique_ptr<RocksStore>> store = RocksStore::Open(db);
    ASSERT_TRUE(store.ok()) << store.status();
    for (const auto& [id, last] : last_acknowledged)
      ExpectSessionIntact(**store, id, last);
  }
}

}  // namespace
}  // namespace gistmem::store
