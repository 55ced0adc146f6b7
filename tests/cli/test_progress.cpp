// The CLI's training ETA (app/cli/progress.h): per stage, from the stage's own steps.
#include <gtest/gtest.h>

#include "cli/progress.h"

using upcycle::cli::StageEta;

TEST(StageEta, FirstStepOfAStageHasNoEstimateThenMeanStepTimeTimesStepsLeft) {
  StageEta eta;
  EXPECT_LT(eta.update("pretrain", 1, 100, 10.0), 0);
  // 4 steps in 2 s since step 1: 0.5 s a step, 95 steps left.
  EXPECT_DOUBLE_EQ(eta.update("pretrain", 5, 100, 12.0), 47.5);
}

TEST(StageEta, ANewStageStartsANewReferenceInsteadOfInheritingTheLastOnesClock) {
  // The bug this guards: one printer serves every stage; the second stage's ETA used the first
  // stage's start time and step count (12 minutes left for a 12-second stage).
  StageEta eta;
  eta.update("pretrain", 1, 600, 0.0);
  eta.update("pretrain", 600, 600, 300.0);
  EXPECT_LT(eta.update("post:sparse", 1, 132, 400.0), 0);
  // 0.1 s a step since the stage's first step; 122 steps left.
  EXPECT_NEAR(eta.update("post:sparse", 10, 132, 400.9), 12.2, 1e-9);
}

TEST(StageEta, AStepCounterThatGoesBackInTheSameStageRestartsTheReference) {
  // A repeat of the same stage name (the next seed's SFT) counts from its own first step.
  StageEta eta;
  eta.update("sft", 1, 50, 0.0);
  eta.update("sft", 50, 50, 49.0);
  EXPECT_LT(eta.update("sft", 1, 50, 100.0), 0);
  EXPECT_DOUBLE_EQ(eta.update("sft", 3, 50, 104.0), 2.0 * 47);
}
