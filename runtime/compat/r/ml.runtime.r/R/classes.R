# The base classes of an R recipe. A recipe's R/applicationTrainer.R defines
#   applicationTrainer <- setRefClass("applicationTrainer", contains = "abstractTrainer", ...)
# and the runtime (its driver, runtime/recipes/r/driver.R) makes one object of each class and
# calls the methods below. The bases only say what a recipe must implement: calling a method the
# recipe left out is an error naming the file and the method.

#' abstractTrainer: what a recipe's trainer implements.
#'
#' train(configurationJSON, df): fit a model on `df` (the train part of the evaluator's split,
#'   or the training data set when the recipe has no evaluator) and write it under
#'   configurationJSON$modelPATH (the samples setwd() there and saveRDS("model.rds")). The older
#'   shape train(configurationJSON) reads its own data. What it returns is ignored unless it is
#'   a model object: then the evaluator's metrics use it instead of the .rds file it wrote.
#'   configurationJSON is a named list of the task's parameters (strings) and the keys the
#'   runtime injects (modelPATH, data set ids, credentials, sandboxId, sandboxName, tenantId).
abstractTrainer <- setRefClass("abstractTrainer", methods = list(
  train = function(configurationJSON, df = NULL) {
    "Fit the model and write it under configurationJSON$modelPATH (implemented by the recipe)."
    stop("R/applicationTrainer.R: applicationTrainer does not implement ",
         "train(configurationJSON[, df])", call. = FALSE)
  }
))

#' abstractScorer: what a recipe's scorer implements.
#'
#' score(configurationJSON): read the model under configurationJSON$modelPATH (the folder this
#'   runtime's train run wrote, its digest checked before R starts), read
#'   configurationJSON$scoringDataSetId and write the predictions to
#'   configurationJSON$scoringResultsDataSetId (through platform_sdk, or as files).
abstractScorer <- setRefClass("abstractScorer", methods = list(
  score = function(configurationJSON) {
    "Score the scoring data set with the trained model (implemented by the recipe)."
    stop("R/applicationScorer.R: applicationScorer does not implement score(configurationJSON)",
         call. = FALSE)
  }
))

#' abstractEvaluator: the base of evaluators.r's regressionEvaluator and classificationEvaluator.
#'
#' split(configurationJSON, df): list(train = ..., test = ...) of data frames. The default reads
#'   trainingDataSetId (when `df` is NULL) and splits its rows at random: evaluation.trainRatio
#'   of them (default 0.8) for training, with evaluation.seed when set.
#' evaluate(configurationJSON, data, model): the metrics named in evaluation.metrics, as a list of
#'   list(name, value, valueType), computed by predicting `data` (the test part) with `model`
#'   and comparing with evaluation.labelColumn. The subclasses implement metrics().
abstractEvaluator <- setRefClass("abstractEvaluator", methods = list(
  split = function(configurationJSON, df = NULL) {
    "The train and test parts: list(train = , test = )."
    if (is.null(df)) df <- ml.runtime.r::readDataSet(configurationJSON, "trainingDataSetId")
    df <- as.data.frame(df)
    rows <- nrow(df)
    if (rows < 2) stop("cannot split ", rows, " row(s) into train and test parts", call. = FALSE)
    ratio <- as.numeric(ml.runtime.r::configValue(configurationJSON, "evaluation.trainRatio", "0.8"))
    if (is.na(ratio) || ratio <= 0 || ratio >= 1)
      stop("evaluation.trainRatio must be a number between 0 and 1 (exclusive)", call. = FALSE)
    seed <- ml.runtime.r::configValue(configurationJSON, "evaluation.seed")
    if (!is.null(seed)) set.seed(as.integer(seed))
    cut <- min(rows - 1L, max(1L, as.integer(round(rows * ratio))))
    picked <- sort(sample.int(rows, cut))
    list(train = df[picked, , drop = FALSE], test = df[-picked, , drop = FALSE])
  },
  predictions = function(model, data) {
    "The model's predictions for `data`, one per row (gbm models use all their trees)."
    if (inherits(model, "gbm")) {
      return(as.vector(stats::predict(model, data, n.trees = model$n.trees)))
    }
    as.vector(stats::predict(model, data))
  },
  metrics = function(configurationJSON, actual, predicted, data) {
    "Named numeric values of the metrics (implemented by regressionEvaluator and
    classificationEvaluator)."
    stop("abstractEvaluator does not compute metrics: extend regressionEvaluator or ",
         "classificationEvaluator from package evaluators.r", call. = FALSE)
  },
  evaluate = function(configurationJSON, data, model) {
    "The metrics named in evaluation.metrics on `data`: list of list(name, value, valueType)."
    label <- ml.runtime.r::configValue(configurationJSON, "evaluation.labelColumn")
    if (is.null(label)) stop("evaluation.labelColumn names no column", call. = FALSE)
    data <- as.data.frame(data)
    if (!label %in% names(data))
      stop("evaluation.labelColumn ", label, " is not a column of the test part (columns: ",
           paste(utils::head(names(data), 12), collapse = ", "), ")", call. = FALSE)
    predicted <- .self$predictions(model, data)
    values <- .self$metrics(configurationJSON, data[[label]], predicted, data)
    lapply(names(values), function(name)
      list(name = name, value = unname(values[[name]]), valueType = "double"))
  }
))

#' configValue(configurationJSON, key, default): a config key's value, `default` when the key is
#' missing or empty.
configValue <- function(configurationJSON, key, default = NULL) {
  value <- configurationJSON[[key]]
  if (is.null(value) || length(value) == 0 || (is.character(value) && !nzchar(value[1])))
    return(default)
  value
}

#' clientContext(configurationJSON): the platform_sdk ClientContext the configuration's
#' credentials and sandbox make (what the samples' Helper$get_client_context builds).
clientContext <- function(configurationJSON) {
  sdk <- reticulate::import("platform_sdk")
  key <- function(k) configValue(configurationJSON, k, "")
  sdk$client_context$ClientContext(
    api_key = key("ML_FRAMEWORK_IMS_USER_CLIENT_ID"), org_id = key("ML_FRAMEWORK_IMS_ORG_ID"),
    user_token = key("ML_FRAMEWORK_IMS_TOKEN"), service_token = key("ML_FRAMEWORK_IMS_ML_TOKEN"),
    sandbox_id = key("sandboxId"), sandbox_name = key("sandboxName"))
}

#' readDataSet(configurationJSON, key): the data set named by configurationJSON[[key]] (a
#' registered id or a path), read through platform_sdk's DatasetReader, as a data.frame.
readDataSet <- function(configurationJSON, key = "trainingDataSetId") {
  id <- configValue(configurationJSON, key)
  if (is.null(id)) stop("the configuration has no ", key, call. = FALSE)
  sdk <- reticulate::import("platform_sdk")
  frame <- sdk$dataset_reader$DatasetReader(clientContext(configurationJSON), id)$read()
  as.data.frame(frame)
}

#' writeDataSet(configurationJSON, df, key): writes `df` to the data set named by
#' configurationJSON[[key]] through platform_sdk's DatasetWriter (JSON lines).
writeDataSet <- function(configurationJSON, df, key = "scoringResultsDataSetId") {
  id <- configValue(configurationJSON, key)
  if (is.null(id)) stop("the configuration has no ", key, call. = FALSE)
  sdk <- reticulate::import("platform_sdk")
  ctx <- clientContext(configurationJSON)
  dataset <- sdk$models$Dataset(ctx)$get_by_id(id)
  invisible(sdk$dataset_writer$DatasetWriter(ctx, dataset)$write(df, file_format = "json"))
}

# (Methods of these classes name the package's functions as ml.runtime.r::f: a recipe's class
# defined in the global environment runs inherited methods there, outside this namespace.)
