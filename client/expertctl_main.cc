// expertctl: talks to a running expertd over its Unix socket.
//
//   expertctl [--socket PATH] [--timeout SECONDS] health|models|stats
//   expertctl generate --prompt TEXT [-n N] [--k K] [--roster N [--roster-temperature T]] [--temperature T]
//                      [--top-p P] [--seed S] [--no-stream]
//   expertctl chat [--prompt TEXT] [--system TEXT] [--messages FILE] [--no-generation-prompt] [same options]
//
// Text goes to stdout as it is generated; errors go to stderr with exit code 1.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/client.h"
#include "nlohmann/json.hpp"

namespace {

using expertd::client::Client;
using Json = nlohmann::json;

struct GenerateFlags {
  std::string prompt;
  int max_tokens = 0;
  int experts_per_token = 0;
  int roster_size = 0;
  double roster_temperature = 0.3;  // the paper's range for OLMoE: tau <= 0.5
  int roster_skip_layers = 1;
  uint64_t roster_seed = 0;
  double temperature = 0;
  double top_p = 0;
  uint64_t seed = 0;
  bool no_stream = false;
  // Options left unset are left out of the request: the daemon's defaults apply.
  CLI::Option* max_tokens_option = nullptr;
  CLI::Option* k_option = nullptr;
  CLI::Option* roster_option = nullptr;
  CLI::Option* temperature_option = nullptr;
  CLI::Option* top_p_option = nullptr;
  CLI::Option* seed_option = nullptr;
};

// chat's own: the conversation before the user's message.
struct ChatFlags {
  std::string system;         // a system message first
  std::string messages_file;  // a JSON list of {"role", "content"}: the turns so far
  bool no_generation_prompt = false;  // continue the last (assistant) message instead of starting a reply
};

void AddGenerateFlags(CLI::App* command, GenerateFlags* flags, bool prompt_required = true) {
  CLI::Option* prompt =
      command->add_option("-p,--prompt", flags->prompt, "the prompt (for chat: the user's message, after --messages)");
  if (prompt_required) prompt->required();
  flags->max_tokens_option =
      command->add_option("-n,--max-tokens", flags->max_tokens, "tokens to generate; default the daemon's")
          ->check(CLI::PositiveNumber);
  flags->k_option = command->add_option("--k", flags->experts_per_token, "routed experts per token (dial-k)")
                        ->check(CLI::PositiveNumber);
  flags->roster_option =
      command->add_option("--roster", flags->roster_size, "Roster of Experts: routing samples per token")
          ->check(CLI::PositiveNumber);
  command->add_option("--roster-temperature", flags->roster_temperature, "the roster's routing noise (tau)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command->add_option("--roster-skip-layers", flags->roster_skip_layers, "first/last MoE layers without noise")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  command->add_option("--roster-seed", flags->roster_seed, "seed of the routing noise")->capture_default_str();
  flags->temperature_option =
      command->add_option("--temperature", flags->temperature, "sampling temperature; 0 = greedy")
          ->check(CLI::NonNegativeNumber);
  flags->top_p_option =
      command->add_option("--top-p", flags->top_p, "nucleus sampling mass")->check(CLI::Range(0.0, 1.0));
  flags->seed_option = command->add_option("--seed", flags->seed, "sampling seed");
  command->add_flag("--no-stream", flags->no_stream, "wait for the whole completion instead of streaming it");
}

// The request fields shared by completions and chat.
Json SamplingFields(const GenerateFlags& flags) {
  Json request = Json::object();
  if (*flags.max_tokens_option) request["max_tokens"] = flags.max_tokens;
  if (*flags.k_option) request["experts_per_token"] = flags.experts_per_token;
  if (*flags.roster_option) {
    request["roster"] = {{"size", flags.roster_size},
                         {"temperature", flags.roster_temperature},
                         {"skip_layers", flags.roster_skip_layers},
                         {"seed", flags.roster_seed}};
  }
  if (*flags.temperature_option) request["temperature"] = flags.temperature;
  if (*flags.top_p_option) request["top_p"] = flags.top_p;
  if (*flags.seed_option) request["seed"] = flags.seed;
  return request;
}

int Fail(const absl::Status& status) {
  std::cerr << "expertctl: " << status.message() << "\n";
  return 1;
}

int PrintJson(const absl::StatusOr<Json>& answer) {
  if (!answer.ok()) return Fail(answer.status());
  std::cout << answer->dump(2, ' ', false, Json::error_handler_t::replace) << "\n";
  return 0;
}

// choices[0][key] as a string when present; "" for chunks without text
// (a role-only chat delta, a final chunk with just finish_reason).
std::string ChoiceText(const Json& answer, const char* key, const char* field) {
  if (!answer.contains("choices") || !answer["choices"].is_array() || answer["choices"].empty()) return "";
  const Json& choice = answer["choices"][0];
  const Json* value = &choice;
  if (key != nullptr) {
    if (!choice.contains(key) || !choice[key].is_object()) return "";
    value = &choice[key];
  }
  if (!value->contains(field) || !(*value)[field].is_string()) return "";
  return (*value)[field].get<std::string>();
}

// The chat's messages: --system, then the turns of --messages, then
// --prompt as the user's message.
absl::StatusOr<Json> ChatMessages(const GenerateFlags& flags, const ChatFlags& chat) {
  Json messages = Json::array();
  if (!chat.system.empty()) messages.push_back({{"role", "system"}, {"content", chat.system}});
  if (!chat.messages_file.empty()) {
    std::ifstream in(chat.messages_file);
    if (!in) return absl::NotFoundError("cannot open --messages file " + chat.messages_file);
    const Json turns = Json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!turns.is_array()) {
      return absl::InvalidArgumentError(chat.messages_file +
                                        " must hold a JSON list of {\"role\": ..., \"content\": ...} messages");
    }
    for (const Json& turn : turns) messages.push_back(turn);
  }
  if (!flags.prompt.empty()) messages.push_back({{"role", "user"}, {"content", flags.prompt}});
  if (messages.empty()) return absl::InvalidArgumentError("give --prompt, --messages or both");
  return messages;
}

int RunGenerate(const Client& client, const GenerateFlags& flags, const ChatFlags* chat_flags) {
  const bool chat = chat_flags != nullptr;
  Json request = SamplingFields(flags);
  if (chat) {
    absl::StatusOr<Json> messages = ChatMessages(flags, *chat_flags);
    if (!messages.ok()) return Fail(messages.status());
    request["messages"] = *std::move(messages);
    if (chat_flags->no_generation_prompt) request["add_generation_prompt"] = false;
  } else {
    request["prompt"] = flags.prompt;
  }
  if (flags.no_stream) {
    absl::StatusOr<Json> answer = chat ? client.ChatComplete(request) : client.Complete(request);
    if (!answer.ok()) return Fail(answer.status());
    std::cout << (chat ? ChoiceText(*answer, "message", "content") : ChoiceText(*answer, nullptr, "text")) << "\n";
    return 0;
  }
  bool printed = false;
  auto on_chunk = [chat, &printed](const Json& chunk) {
    std::cout << (chat ? ChoiceText(chunk, "delta", "content") : ChoiceText(chunk, nullptr, "text")) << std::flush;
    printed = true;
  };
  absl::Status status = chat ? client.ChatCompleteStream(request, on_chunk) : client.CompleteStream(request, on_chunk);
  // End the streamed line; a call that failed before any text prints nothing.
  if (status.ok() || printed) std::cout << "\n" << std::flush;
  return status.ok() ? 0 : Fail(status);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"expertctl: query and drive a running expertd over its Unix socket"};
  app.require_subcommand(1);
  std::string socket_path;
  double timeout_s = 30;
  app.add_option("--socket", socket_path,
                 "daemon socket; default $EXPERTD_SOCKET, else /run/expertd/expertd.sock if it exists, "
                 "else $XDG_RUNTIME_DIR/expertd.sock");
  app.add_option("--timeout", timeout_s,
                 "seconds to wait for the daemon (per reply piece when streaming)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  CLI::App* health = app.add_subcommand("health", "check that the daemon answers");
  CLI::App* models = app.add_subcommand("models", "list the served models");
  CLI::App* stats = app.add_subcommand("stats", "print the daemon's cache and queue figures");
  GenerateFlags generate_flags;
  CLI::App* generate = app.add_subcommand("generate", "complete a prompt, streaming the text");
  AddGenerateFlags(generate, &generate_flags);
  GenerateFlags chat_flags;
  CLI::App* chat = app.add_subcommand("chat", "send a conversation to /v1/chat/completions");
  AddGenerateFlags(chat, &chat_flags, /*prompt_required=*/false);
  ChatFlags chat_only;
  chat->add_option("--system", chat_only.system, "a system message before the conversation");
  chat->add_option("--messages", chat_only.messages_file,
                   "a JSON file with the conversation so far: [{\"role\": ..., \"content\": ...}, ...]");
  chat->add_flag("--no-generation-prompt", chat_only.no_generation_prompt,
                 "continue the last message (an assistant's) instead of starting the assistant's reply");

  CLI11_PARSE(app, argc, argv);

  if (socket_path.empty()) socket_path = expertd::client::DefaultSocketPath(std::getenv("EXPERTD_SOCKET"),
                                                                            std::getenv("XDG_RUNTIME_DIR"));
  Client client(socket_path,
                std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0)));

  if (*health) return PrintJson(client.Health());
  if (*models) return PrintJson(client.Models());
  if (*stats) return PrintJson(client.Stats());
  if (*generate) return RunGenerate(client, generate_flags, nullptr);
  if (*chat) return RunGenerate(client, chat_flags, &chat_only);
  return 1;
}
