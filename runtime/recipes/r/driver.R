# The runtime's driver of one R recipe task: `Rscript driver.R REQUEST.json`.
# REQUEST: {"task": "train"|"score", "config": {...}, "files": [R/*.R, absolute], "result": PATH}.
# It sources the recipe's R files into the global environment (as the platform's image loaded
# them; reference classes look their helpers up there), calls the recipe's methods and writes
# RESULT: {"ok": true, "metrics": [...], "train_called_at": epoch, "marks": {...}} or {"ok":
# false, "error": {"message", "class", "method"}}. Everything of the driver's own lives in this
# local() scope, so the recipe's global environment holds only what the recipe defined.
# The driver itself loads jsonlite only: reticulate (which loads Matrix and Rcpp, about a second
# of CPU) and Python inside R start when the recipe first uses them, not before.
local({
  # When R started, when the driver began, when the recipe's first method was called (epochs):
  # the benchmark (benchmarks/bench_r.py) reads where a cold start's time goes.
  # A warm R parent's child (parent.R) names its request in MLRUNTIME_R_REQUEST and ends
  # through the parent's exit (option mlruntime.r.exit); a cold Rscript gets it as its argument.
  request_path <- Sys.getenv("MLRUNTIME_R_REQUEST")
  warm <- nzchar(request_path)
  if (warm) Sys.unsetenv("MLRUNTIME_R_REQUEST") else
    request_path <- commandArgs(trailingOnly = TRUE)[[1]]
  now <- as.numeric(Sys.time())
  marks <- list(r_started = if (warm) now else now - proc.time()[["elapsed"]],
                driver_started = now, warm = warm)
  mark <- function(name) marks[[name]] <<- as.numeric(Sys.time())
  options(warn = 1)
  request <- jsonlite::fromJSON(request_path, simplifyVector = FALSE)
  config <- request$config
  method <- "loading the recipe"
  say <- function(...) cat("[r] ", ..., "\n", sep = "")

  write_result <- function(value) {
    text <- jsonlite::toJSON(value, auto_unbox = TRUE, null = "null", digits = NA, na = "null")
    tmp <- paste0(request$result, ".tmp")
    writeLines(text, tmp)
    file.rename(tmp, request$result)
  }

  # A recipe's reticulate::use_python(PATH) is honoured when PATH exists; the samples name
  # /usr/bin/python3.6, which is an error in reticulate >= 1.23: then it is logged and ignored,
  # and reticulate keeps RETICULATE_PYTHON (an environment with numpy < 2 and platform_sdk).
  # The patch is put in when reticulate loads (a package hook), so a recipe that never uses
  # Python from R never pays for reticulate.
  patch_use_python <- function(...) {
    original <- get("use_python", envir = asNamespace("reticulate"))
    use_python <- function(python, required = NULL) {
      if (file.exists(python)) return(invisible(original(python, required = required)))
      say("use_python(\"", python, "\"): no such interpreter here; ignored (reticulate uses ",
          Sys.getenv("RETICULATE_PYTHON"), ")")
      invisible(NULL)
    }
    utils::assignInNamespace("use_python", use_python, ns = "reticulate")
  }
  if (isNamespaceLoaded("reticulate")) patch_use_python() else
    setHook(packageEvent("reticulate", "onLoad"), patch_use_python)

  # The older trainer reads its own data; the two-argument one gets it.
  arity <- function(f) length(formals(f))
  model_from <- function(returned) {
    if (!is.null(returned) && !is.character(returned) && !is.logical(returned) &&
        !is.numeric(returned)) return(returned)
    folder <- config$modelPATH
    found <- list.files(folder, pattern = "\\.[Rr][Dd][Ss]$", full.names = TRUE)
    preferred <- file.path(folder, "model.rds")
    if (file.exists(preferred)) return(readRDS(preferred))
    if (length(found) == 1) return(readRDS(found[[1]]))
    stop("the trainer returned no model and wrote ", length(found), " .rds files under ",
         "modelPATH; the evaluator needs one model (model.rds)", call. = FALSE)
  }
  metric_list <- function(found) {
    if (is.null(found)) return(list())
    if (is.numeric(found) && !is.null(names(found)))        # c(MAPE = 0.1, ...)
      return(lapply(names(found), function(n) list(name = n, value = found[[n]])))
    if (is.list(found) && !is.null(found$name))             # a single insight
      found <- list(found)
    if (is.list(found) && length(found) && !is.null(names(found)) && is.null(found[[1]]$name))
      return(lapply(names(found), function(n) list(name = n, value = found[[n]])))
    lapply(found, function(m) list(name = as.character(m$name), value = as.numeric(m$value),
                                   valueType = if (is.null(m$valueType)) "double" else m$valueType))
  }
  defines <- function(name) exists(name, envir = globalenv(), inherits = FALSE)

  run <- function() {
    mark("request_read")
    for (file in request$files) {
      method <<- paste0("sourcing R/", basename(file))
      sys.source(file, envir = globalenv(), keep.source = TRUE)
    }
    mark("sourced")
    if (request$task == "train") {
      if (!defines("applicationTrainer"))
        stop("R/applicationTrainer.R defines no applicationTrainer class", call. = FALSE)
      trainer <- get("applicationTrainer", envir = globalenv())$new()
      evaluator <- NULL
      if (defines("applicationEvaluator"))
        evaluator <- get("applicationEvaluator", envir = globalenv())$new()
      train_part <- NULL
      test_part <- NULL
      if (!is.null(evaluator)) {
        method <<- "applicationEvaluator$split"
        mark("split_called")
        parts <- if (arity(evaluator$split) >= 2) evaluator$split(config, NULL) else
          evaluator$split(config)
        if (!is.list(parts) || length(parts) < 2)
          stop("split() must return list(train = , test = )", call. = FALSE)
        train_part <- if (!is.null(parts$train)) parts$train else parts[[1]]
        test_part <- if (!is.null(parts$test)) parts$test else parts[[2]]
      }
      two <- arity(trainer$train) >= 2
      if (two && is.null(train_part))
        train_part <- ml.runtime.r::readDataSet(config, "trainingDataSetId")
      method <<- "applicationTrainer$train"
      mark("train_called")
      called_at <- marks$train_called
      returned <- if (two) trainer$train(config, train_part) else trainer$train(config)
      metrics <- list()
      if (!is.null(evaluator)) {
        method <<- "applicationEvaluator$evaluate"
        n <- arity(evaluator$evaluate)
        found <- if (n <= 1) evaluator$evaluate(config) else
          evaluator$evaluate(config, test_part, model_from(returned))
        metrics <- metric_list(found)
      }
      write_result(list(ok = TRUE, metrics = metrics, train_called_at = called_at, marks = marks))
    } else if (request$task == "score") {
      if (!defines("applicationScorer"))
        stop("R/applicationScorer.R defines no applicationScorer class", call. = FALSE)
      scorer <- get("applicationScorer", envir = globalenv())$new()
      method <<- "applicationScorer$score"
      mark("score_called")
      scorer$score(config)
      write_result(list(ok = TRUE, marks = marks))
    } else {
      stop("the R driver runs train and score tasks, not ", request$task, call. = FALSE)
    }
  }

  outcome <- tryCatch({ run(); 0L }, error = function(e) {
    write_result(list(ok = FALSE, error = list(message = conditionMessage(e),
                                               class = paste(class(e), collapse = ", "),
                                               method = method)))
    say("R error in ", method, ": ", conditionMessage(e))
    1L
  })
  finish <- getOption("mlruntime.r.exit", function(code) quit(save = "no", status = code))
  finish(outcome)
})
