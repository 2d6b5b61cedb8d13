// The in-process server the server tests talk to: the shipped model (models/kjv-dream-tiny) with its generation
// defaults, on an ephemeral port, batches of 4; started once per test suite that derives from ShippedServer.
#pragma once
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "engine/generation_options.h"
#include "model/model.h"
#include "server/server.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace dlx::test {

inline const std::string kShippedModel = source_path("models/kjv-dream-tiny");

class ShippedServer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = Model::load(kShippedModel);
    tok_ = std::make_unique<Tokenizer>(Tokenizer::load(kShippedModel));
    ServerOptions so;
    so.port = 0;
    so.defaults = generation_defaults(kShippedModel);
    so.scheduler.max_batch = 4;
    server_ = std::make_unique<Server>(*model_, *tok_, so);
    port_ = server_->start();
  }
  static void TearDownTestSuite() {
    server_.reset();
    tok_.reset();
    model_.reset();
  }
  static inline std::unique_ptr<Model> model_;
  static inline std::unique_ptr<Tokenizer> tok_;
  static inline std::unique_ptr<Server> server_;
  static inline int port_ = 0;
};

}  // namespace dlx::test
