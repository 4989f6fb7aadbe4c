# The evaluators a recipe's R/applicationEvaluator.R extends:
#   applicationEvaluator <- setRefClass("applicationEvaluator", contains = "regressionEvaluator",
#                                       methods = list(split = function(configurationJSON) ...))
# split() and evaluate() come from ml.runtime.r's abstractEvaluator; these classes compute the
# metrics. The names and definitions are the runtime's own (runtime/metrics.py), so an R recipe's
# MAPE means what a Python recipe's does.

#' metricNames(configurationJSON, default): the canonical names evaluation.metrics lists.
metricNames <- function(configurationJSON, default) {
  raw <- configValue(configurationJSON, "evaluation.metrics", default)
  names <- trimws(strsplit(raw, ",", fixed = TRUE)[[1]])
  names <- names[nzchar(names)]
  aliases <- c(mape = "MAPE", mae = "MAE", rmse = "RMSE", mase = "MASE", mse = "MSE",
               "r-squared" = "R-squared", rsquared = "R-squared", r2 = "R-squared",
               accuracy = "accuracy", precision = "precision", recall = "recall",
               "f-score" = "F-score", fscore = "F-score", f1 = "F-score")
  known <- aliases[tolower(names)]
  if (anyNA(known))
    stop("unknown metric(s) in evaluation.metrics: ", paste(names[is.na(known)], collapse = ", "),
         " (known: ", paste(unique(aliases), collapse = ", "), ")", call. = FALSE)
  unique(unname(known))
}

#' regressionMetrics(names, actual, predicted, scaling): MAPE (a fraction; rows whose actual
#' value is 0 left out), MAE, RMSE, MSE, R-squared, and MASE (the mean absolute error over the
#' mean absolute difference between `actual` and `scaling`, the naive forecast; without a
#' scaling column, over the mean absolute step of `actual`). Undefined values are NaN.
regressionMetrics <- function(names, actual, predicted, scaling = NULL) {
  actual <- as.numeric(actual)
  predicted <- as.numeric(predicted)
  if (length(actual) != length(predicted))
    stop(length(predicted), " predictions for ", length(actual), " rows", call. = FALSE)
  error <- predicted - actual
  mae <- mean(abs(error))
  mse <- mean(error^2)
  out <- list()
  for (name in names) {
    out[[name]] <- switch(name,
      MAE = mae, MSE = mse, RMSE = sqrt(mse),
      MAPE = { nz <- actual != 0; if (any(nz)) mean(abs(error[nz]) / abs(actual[nz])) else NaN },
      "R-squared" = { total <- sum((actual - mean(actual))^2)
                      if (total > 0) 1 - sum(error^2) / total else NaN },
      MASE = { scale <- if (!is.null(scaling)) mean(abs(actual - as.numeric(scaling)))
                        else if (length(actual) > 1) mean(abs(diff(actual))) else 0
               if (scale > 0) mae / scale else NaN },
      stop("metric ", name, " is not a regression metric", call. = FALSE))
  }
  out
}

#' classificationMetrics(names, actual, predicted, positive): accuracy, and precision, recall and
#' F-score of the positive class (binary labels: 1/TRUE/"yes", else the larger label), macro
#' averaged over the classes when there are more than two.
classificationMetrics <- function(names, actual, predicted, positive = NULL) {
  actual <- as.character(actual)
  predicted <- as.character(predicted)
  classes <- sort(unique(actual))
  prf <- function(cls) {
    tp <- sum(actual == cls & predicted == cls)
    fp <- sum(actual != cls & predicted == cls)
    fn <- sum(actual == cls & predicted != cls)
    p <- if (tp + fp > 0) tp / (tp + fp) else 0
    r <- if (tp + fn > 0) tp / (tp + fn) else 0
    c(precision = p, recall = r, "F-score" = if (p + r > 0) 2 * p * r / (p + r) else 0)
  }
  if (length(classes) <= 2) {
    if (is.null(positive)) {
      hit <- classes[tolower(classes) %in% c("1", "true", "yes", "positive")]
      positive <- if (length(hit)) hit[1] else classes[length(classes)]
    }
    scores <- prf(as.character(positive))
  } else {
    scores <- rowMeans(sapply(classes, prf))
  }
  out <- list()
  for (name in names) {
    out[[name]] <- if (name == "accuracy") mean(actual == predicted) else
      if (name %in% names(scores)) unname(scores[[name]]) else
      stop("metric ", name, " is not a classification metric", call. = FALSE)
  }
  out
}

#' regressionEvaluator: split() and evaluate() of abstractEvaluator; metrics() computes the
#' regression metrics named in evaluation.metrics (default MAPE,MAE,RMSE), MASE scaled by
#' evaluation.scalingColumn when the test part has that column.
regressionEvaluator <- setRefClass("regressionEvaluator", contains = "abstractEvaluator",
  methods = list(
    metrics = function(configurationJSON, actual, predicted, data) {
      "Named values of the regression metrics evaluation.metrics lists."
      column <- ml.runtime.r::configValue(configurationJSON, "evaluation.scalingColumn")
      scaling <- if (!is.null(column) && column %in% names(data)) data[[column]] else NULL
      evaluators.r::regressionMetrics(evaluators.r::metricNames(configurationJSON, "MAPE,MAE,RMSE"), actual, predicted,
                        scaling)
    }
  ))

#' classificationEvaluator: split() and evaluate() of abstractEvaluator; metrics() computes the
#' classification metrics named in evaluation.metrics (default accuracy,precision,recall,F-score),
#' the positive class from evaluation.positiveLabel when set. A model whose predict() gives
#' probabilities of a binary outcome is labelled at 0.5.
classificationEvaluator <- setRefClass("classificationEvaluator", contains = "abstractEvaluator",
  methods = list(
    predictions = function(model, data) {
      "Predicted labels: predict(type = 'class') where the model has it, else 0/1 at 0.5."
      found <- tryCatch(stats::predict(model, data, type = "class"), error = function(e) NULL)
      if (is.null(found)) {
        found <- stats::predict(model, data, type = "response")
        if (is.numeric(found)) found <- as.integer(found >= 0.5)
      }
      as.vector(found)
    },
    metrics = function(configurationJSON, actual, predicted, data) {
      "Named values of the classification metrics evaluation.metrics lists."
      evaluators.r::classificationMetrics(evaluators.r::metricNames(configurationJSON, "accuracy,precision,recall,F-score"),
                            actual, predicted,
                            ml.runtime.r::configValue(configurationJSON, "evaluation.positiveLabel"))
    }
  ))
