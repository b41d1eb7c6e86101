// Turns through the real server: Generate's stream, Chat over several turns, Append, and the
// continuation of a reply cut by max_tokens.
#include <gtest/gtest.h>

#include "model/config.h"
#include "model/tokenizer/chat_template.h"
#include "service/runtime.h"
#include "service/turn_tokens.h"
#include "store/rocks_store.h"
#include "tests/integration/service_test_support.h"

namespace gistmem::testing {
namespace {

const service::TurnTokens& FixtureTurnTokens() {
  static const model::ModelConfig config =
      model::ModelConfig::FromFile(FixtureModelDir() / "config.json");
  static const service::TurnTokens tokens(FixtureTokenizer(), config);
  return tokens;
}

size_t MessageTokens(const std::string& role, const std::string& text) {
  return FixtureTurnTokens().Message(role, text).value().size();
}

class TurnsTest : public ::testing::Test {
 protected:
  TempDir dir_;
  TestServer server_{TestConfig(dir_.path() / "db")};
};

TEST_F(TurnsTest, GenerateStreamsDeltasThatMakeTheReply) {
  const std::string id = CreateSession(server_.stub(), "You are a test.");
  const TurnResult turn = Generate(server_.stub(), id, "Say something long.", Greedy(40));
  ASSERT_TRUE(turn.status.ok()) << turn.status.error_message();
  EXPECT_TRUE(turn.well_ordered);
  ASSERT_TRUE(turn.started);
  ASSERT_TRUE(turn.ended);
  EXPECT_EQ(turn.start_session_id, id);
  // Transcript: system (0), user (1), assistant reply (2).
  EXPECT_EQ(turn.start_turn_index, 2);
  EXPECT_EQ(turn.end.turn_index(), 2);
  EXPECT_GT(turn.deltas, 0);
  // The deltas' text is the reply's ids decoded in one piece.
  EXPECT_EQ(turn.text, FixtureTokenizer().Decode(turn.token_ids, true));

  const v1::Usage& usage = turn.end.usage();
  const bool stopped = turn.end.finish_reason() == v1::FINISH_REASON_STOP;
  EXPECT_TRUE(stopped || turn.end.finish_reason() == v1::FINISH_REASON_LENGTH);
  // The stop token ends the reply but is not streamed.
  EXPECT_EQ(usage.completion_tokens(), static_cast<int64_t>(turn.token_ids.size()) + stopped);
  if (!stopped) {
    EXPECT_EQ(usage.completion_tokens(), 40);
  }
  EXPECT_EQ(usage.cached_tokens(), 0);
  EXPECT_EQ(usage.stream_tokens(), usage.prompt_tokens() + usage.completion_tokens());
  // Read: BOS and system message, the user message, the assistant header.
  EXPECT_EQ(usage.prompt_tokens(),
            FixtureTurnTokens().SessionStart("You are a test.").value().size() +
                MessageTokens("user", "Say something long.") +
                FixtureTurnTokens().ReplyPrompt().size());

  const v1::Session session = GetSession(server_.stub(), id);
  EXPECT_EQ(session.turns(), 3);
  EXPECT_EQ(session.stream_tokens(), usage.stream_tokens());

  // The next turn reuses the whole stream from the cache, but for the last token of a reply
  // cut by max_tokens: nothing needed its logits yet, so it is read now.
  const TurnResult next = Generate(server_.stub(), id, "More.", Greedy(4));
  ASSERT_TRUE(next.status.ok());
  EXPECT_EQ(next.start_turn_index, 4);
  const int64_t unread = turn.end.finish_reason() == v1::FINISH_REASON_LENGTH ? 1 : 0;
  EXPECT_EQ(next.end.usage().cached_tokens(), usage.stream_tokens() - unread);
}

TEST_F(TurnsTest, GreedyRepliesAreReproducible) {
  const std::string a = CreateSession(server_.stub(), "Same.");
  const std::string b = CreateSession(server_.stub(), "Same.");
  const TurnResult first = Generate(server_.stub(), a, "Hello there", Greedy(16));
  const TurnResult second = Generate(server_.stub(), b, "Hello there", Greedy(16));
  ASSERT_TRUE(first.status.ok());
  ASSERT_TRUE(second.status.ok());
  EXPECT_EQ(first.token_ids, second.token_ids);
  EXPECT_FALSE(first.token_ids.empty());
}

TEST_F(TurnsTest, ChatRunsTurnsOnOneStreamLikeGenerate) {
  const std::string chat_id = CreateSession(server_.stub(), "Chat.");
  const std::string generate_id = CreateSession(server_.stub(), "Chat.");
  const std::vector<std::string> messages = {"One", "Two, please", "And three"};

  ChatClient chat(server_.stub(), chat_id);
  int64_t expected_index = 2;
  for (const std::string& message : messages) {
    const TurnResult in_chat = chat.Turn(message, Greedy(10));
    ASSERT_TRUE(in_chat.ended) << in_chat.status.error_message();
    EXPECT_TRUE(in_chat.well_ordered);
    EXPECT_EQ(in_chat.start_session_id, chat_id);
    EXPECT_EQ(in_chat.end.turn_index(), expected_index);
    EXPECT_EQ(in_chat.text, FixtureTokenizer().Decode(in_chat.token_ids, true));
    expected_index += 2;

    const TurnResult in_generate = Generate(server_.stub(), generate_id, message, Greedy(10));
    ASSERT_TRUE(in_generate.status.ok());
    EXPECT_EQ(in_chat.token_ids, in_generate.token_ids);
    EXPECT_EQ(in_chat.end.usage().stream_tokens(), in_generate.end.usage().stream_tokens());
  }
  EXPECT_TRUE(chat.Close().ok());
  EXPECT_EQ(GetSession(server_.stub(), chat_id).turns(), 7);
}

TEST_F(TurnsTest, ChatStreamMayBeOpenedAgainOnTheSameSession) {
  const std::string id = CreateSession(server_.stub(), "");
  {
    ChatClient chat(server_.stub(), id);
    ASSERT_TRUE(chat.Turn("first stream", Greedy(3)).ended);
    ASSERT_TRUE(chat.Close().ok());
  }
  ChatClient chat(server_.stub(), id);
  const TurnResult turn = chat.Turn("second stream", Greedy(3));
  ASSERT_TRUE(turn.ended);
  EXPECT_EQ(turn.end.turn_index(), 4);
  EXPECT_TRUE(chat.Close().ok());
}

TEST_F(TurnsTest, AppendReadsWithoutGenerating) {
  const std::string id = CreateSession(server_.stub(), "Tools.");
  v1::AppendResponse appended;
  ASSERT_TRUE(Append(server_.stub(), id, "The tool returned 42.", &appended, "tool").ok());
  EXPECT_GT(appended.usage().prompt_tokens(), 0);
  EXPECT_EQ(appended.usage().completion_tokens(), 0);
  EXPECT_EQ(appended.usage().stream_tokens(), appended.usage().prompt_tokens());
  v1::Session session = GetSession(server_.stub(), id);
  EXPECT_EQ(session.turns(), 2);  // system, tool
  EXPECT_EQ(session.stream_tokens(), appended.usage().stream_tokens());

  ASSERT_TRUE(Append(server_.stub(), id, "Another observation.", &appended).ok());
  EXPECT_EQ(appended.usage().cached_tokens(), session.stream_tokens());

  // Generating with no new message replies to what was appended.
  const TurnResult reply = Generate(server_.stub(), id, "", Greedy(5));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_EQ(reply.end.turn_index(), 3);
  EXPECT_EQ(GetSession(server_.stub(), id).turns(), 4);

  // The same stream built by Generate messages instead gives the same tokens.
  const std::string twin = CreateSession(server_.stub(), "Tools.");
  ASSERT_TRUE(Append(server_.stub(), twin, "The tool returned 42.", nullptr, "tool").ok());
  ASSERT_TRUE(Append(server_.stub(), twin, "Another observation.").ok());
  EXPECT_EQ(Generate(server_.stub(), twin, "", Greedy(5)).token_ids, reply.token_ids);
}

// A reply cut by max_tokens goes on, with an empty message, exactly as one longer turn would.
TEST_F(TurnsTest, ReplyCutByMaxTokensContinuesExactly) {
  const std::string split = CreateSession(server_.stub(), "Continue.");
  const std::string whole = CreateSession(server_.stub(), "Continue.");
  const TurnResult first = Generate(server_.stub(), split, "Tell me a story", Greedy(6));
  ASSERT_TRUE(first.status.ok());
  if (first.end.finish_reason() != v1::FINISH_REASON_LENGTH) {
    GTEST_SKIP() << "the fixture model stopped within 6 tokens";
  }
  const TurnResult rest = Generate(server_.stub(), split, "", Greedy(6));
  ASSERT_TRUE(rest.status.ok());
  EXPECT_EQ(rest.end.usage().prompt_tokens(), 0);
  const TurnResult longer = Generate(server_.stub(), whole, "Tell me a story", Greedy(12));
  ASSERT_TRUE(longer.status.ok());

  std::vector<int32_t> joined = first.token_ids;
  joined.insert(joined.end(), rest.token_ids.begin(), rest.token_ids.end());
  EXPECT_EQ(joined, longer.token_ids);
  EXPECT_EQ(rest.end.usage().stream_tokens(), longer.end.usage().stream_tokens());

  // A new message after a cut reply first closes it with the end-of-turn token.
  const std::string cut = CreateSession(server_.stub(), "Continue.");
  ASSERT_TRUE(Generate(server_.stub(), cut, "Tell me a story", Greedy(6)).status.ok());
  const TurnResult after_cut = Generate(server_.stub(), cut, "Next", Greedy(4));
  ASSERT_TRUE(after_cut.status.ok());
  EXPECT_EQ(after_cut.end.usage().prompt_tokens(),
            1 + MessageTokens("user", "Next") + FixtureTurnTokens().ReplyPrompt().size());
}

// Turns rendered one at a time add up to the chat template's rendering of the conversation.
TEST_F(TurnsTest, StreamIsTheTemplateRenderingOfTheConversation) {
  const std::string id = CreateSession(server_.stub(), "  System text.  ");
  ASSERT_TRUE(Append(server_.stub(), id, "A user message").ok());
  ASSERT_TRUE(Append(server_.stub(), id, "An assistant message", nullptr, "assistant").ok());
  const TurnResult reply = Generate(server_.stub(), id, "A question?", Greedy(3));
  ASSERT_TRUE(reply.status.ok());
  server_.Stop();

  absl::StatusOr<std::unique_ptr<store::RocksStore>> opened =
      store::RocksStore::Open(dir_.path() / "db");
  ASSERT_TRUE(opened.ok()) << opened.status();
  absl::StatusOr<std::vector<store::TurnRecord>> transcript =
      (*opened)->LoadTranscript(service::kDefaultTenant, id);
  ASSERT_TRUE(transcript.ok()) << transcript.status();
  ASSERT_EQ(transcript->size(), 5u);
  std::vector<int32_t> stream;
  for (const store::TurnRecord& turn : *transcript) {
    stream.insert(stream.end(), turn.token_ids().begin(), turn.token_ids().end());
  }
  const std::vector<model::ChatMessage> conversation = {{"system", "  System text.  "},
                                                        {"user", "A user message"},
                                                        {"assistant", "An assistant message"},
                                                        {"user", "A question?"}};
  const std::vector<int32_t> rendered =
      FixtureTokenizer().Encode(model::RenderChat(model::ChatFormat::kLlama3, conversation, true));
  ASSERT_EQ(stream.size(), rendered.size() + reply.end.usage().completion_tokens());
  EXPECT_EQ(std::vector<int32_t>(stream.begin(), stream.begin() + rendered.size()), rendered);
  EXPECT_EQ(transcript->back().role(), "assistant");
  EXPECT_TRUE(transcript->back().generated());
  EXPECT_EQ(transcript->back().text(), reply.text);
}

TEST_F(TurnsTest, SeededSamplingIsReproducible) {
  v1::SamplingParams sampling = Greedy(12);
  sampling.set_temperature(0.9f);
  sampling.set_top_k(50);
  sampling.set_top_p(0.95f);
  sampling.set_repetition_penalty(1.1f);
  sampling.set_seed(1234);
  const std::string a = CreateSession(server_.stub(), "Sample.");
  const std::string b = CreateSession(server_.stub(), "Sample.");
  const TurnResult first = Generate(server_.stub(), a, "Pick words", sampling);
  const TurnResult second = Generate(server_.stub(), b, "Pick words", sampling);
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.token_ids, second.token_ids);
}

}  // namespace
}  // namespace gistmem::testing
