package org.pytorch.serve.http.api.rest;

import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.QueryStringDecoder;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.pytorch.serve.archive.DownloadArchiveException;
import org.pytorch.serve.archive.model.ModelException;
import org.pytorch.serve.archive.model.ModelVersionNotFoundException;
import org.pytorch.serve.archive.workflow.WorkflowException;
import org.pytorch.serve.http.HttpRequestHandlerChain;
import org.pytorch.serve.util.ConfigManager;
import org.pytorch.serve.util.NettyUtils;
import org.pytorch.serve.wlm.Model;
import org.pytorch.serve.wlm.ModelManager;
import org.pytorch.serve.wlm.WorkerInitializationException;
import org.pytorch.serve.wlm.WorkerState;
import org.pytorch.serve.wlm.WorkerThread;

/**
 * mlkube's replacement for TorchServe 0.12's handler of the Open Inference Protocol (KServe v2) on the
 * inference port, put in its place by mlkube's Java agent (mlkube.torchserve.Agent).
 *
 * <p>TorchServe's chain on the inference port checks the inference key, then hands POST
 * /v2/models/{m}/infer to the model's workers (InferenceRequestHandler, unchanged), then asks this handler
 * about every other path. TorchServe's own version answers GET /v2, /v2/health/live and a constant
 * /v2/health/ready; this one also answers GET /v2/models/{m}[/versions/{v}] (the metadata the model's handler
 * wrote from its model card when a worker loaded it, in the folder MLKUBE_OIP_METADATA names) and
 * /v2/models/{m}[/versions/{v}]/ready, and /v2/health/ready says whether every model has a worker with the
 * model loaded. Not ready is 400 (the protocol: 200 is true, a 4xx false).
 */
public class OpenInferenceProtocolRequestHandler extends HttpRequestHandlerChain {

    static final String METADATA_ENV = "MLKUBE_OIP_METADATA";
    private static final HttpResponseStatus NOT_READY = HttpResponseStatus.BAD_REQUEST;

    /** Creates a new {@code OpenInferenceProtocolRequestHandler} instance. */
    public OpenInferenceProtocolRequestHandler() {}

    @Override
    public void handleRequest(
            ChannelHandlerContext ctx,
            FullHttpRequest req,
            QueryStringDecoder decoder,
            String[] segments)
            throws ModelException, DownloadArchiveException, WorkflowException,
                    WorkerInitializationException {
        List<String> parts = new ArrayList<>(Arrays.asList(segments));
        parts.removeIf(String::isEmpty);
        if (parts.isEmpty() || !parts.get(0).equals("v2") || !HttpMethod.GET.equals(req.method())) {
            chain.handleRequest(ctx, req, decoder, segments);
            return;
        }
        List<String> path = parts.subList(1, parts.size());
        if (path.isEmpty()) {
            serverMetadata(ctx);
        } else if (path.equals(List.of("health", "live"))) {
            JsonObject live = new JsonObject();
            live.addProperty("live", true);
            send(ctx, HttpResponseStatus.OK, live);
        } else if (path.equals(List.of("health", "ready"))) {
            serverReady(ctx);
        } else if (path.size() >= 2 && path.get(0).equals("models")) {
            modelEndpoint(ctx, req, decoder, segments, path.get(1), path.subList(2, path.size()));
        } else {
            chain.handleRequest(ctx, req, decoder, segments);
        }
    }

    /** GET /v2/models/{m}[/versions/{v}][/ready]: `rest` is what follows the model's name. */
    private void modelEndpoint(
            ChannelHandlerContext ctx,
            FullHttpRequest req,
            QueryStringDecoder decoder,
            String[] segments,
            String name,
            List<String> rest)
            throws ModelException, DownloadArchiveException, WorkflowException,
                    WorkerInitializationException {
        String version = null;
        if (rest.size() >= 2 && rest.get(0).equals("versions")) {
            version = rest.get(1);
            rest = rest.subList(2, rest.size());
        }
        boolean ready = rest.equals(List.of("ready"));
        if (!ready && !rest.isEmpty()) {
            chain.handleRequest(ctx, req, decoder, segments);
            return;
        }
        Model model;
        try {
            model = ModelManager.getInstance().getModel(name, version);
        } catch (ModelVersionNotFoundException e) {
            sendError(ctx, HttpResponseStatus.NOT_FOUND, "model '" + name + "' has no version '" + version + "'");
            return;
        }
        if (model == null) {
            sendError(
                    ctx,
                    HttpResponseStatus.NOT_FOUND,
                    "no model named '" + name + "' is served here; the models: "
                            + String.join(", ", ModelManager.getInstance().getDefaultModels().keySet()));
        } else if (ready) {
            modelReady(ctx, model);
        } else {
            modelMetadata(ctx, model);
        }
    }

    private static void serverMetadata(ChannelHandlerContext ctx) {
        JsonObject body = new JsonObject();
        body.addProperty("name", "mlkube (TorchServe)");
        body.addProperty("version", ConfigManager.getInstance().getVersion());
        body.add("extensions", new JsonArray());
        send(ctx, HttpResponseStatus.OK, body);
    }

    /** Ready when every model has a worker with the model loaded. */
    private static void serverReady(ChannelHandlerContext ctx) {
        List<String> waiting = new ArrayList<>();
        for (Map.Entry<String, Model> entry : ModelManager.getInstance().getDefaultModels().entrySet()) {
            if (readyWorkers(entry.getValue()) == 0) {
                waiting.add(entry.getKey());
            }
        }
        JsonObject body = new JsonObject();
        body.addProperty("ready", waiting.isEmpty());
        if (!waiting.isEmpty()) {
            body.addProperty("error", "no worker has loaded model(s) " + String.join(", ", waiting));
        }
        send(ctx, waiting.isEmpty() ? HttpResponseStatus.OK : NOT_READY, body);
    }

    private static void modelReady(ChannelHandlerContext ctx, Model model) {
        int ready = readyWorkers(model);
        JsonObject body = new JsonObject();
        body.addProperty("name", model.getModelName());
        body.addProperty("ready", ready > 0);
        if (ready == 0) {
            body.addProperty(
                    "error",
                    "model '" + model.getModelName() + "' has no worker with the model loaded (workers: "
                            + model.getMinWorkers() + " to " + model.getMaxWorkers() + ")");
        }
        send(ctx, ready > 0 ? HttpResponseStatus.OK : NOT_READY, body);
    }

    private static int readyWorkers(Model model) {
        int ready = 0;
        for (WorkerThread worker : ModelManager.getInstance().getWorkers(model.getModelVersionName())) {
            if (worker.getState() == WorkerState.WORKER_MODEL_LOADED) {
                ready++;
            }
        }
        return ready;
    }

    /** The metadata the model's handler wrote when a worker loaded the model (from its model card). */
    private static void modelMetadata(ChannelHandlerContext ctx, Model model) {
        String folder = System.getenv(METADATA_ENV);
        Path file = folder == null ? null : Paths.get(folder, model.getModelName() + ".json");
        String metadata = null;
        if (file != null && file.getParent().equals(Paths.get(folder)) && Files.isRegularFile(file)) {
            try {
                metadata = new String(Files.readAllBytes(file), StandardCharsets.UTF_8).strip();
            } catch (IOException e) {
                metadata = null;
            }
        }
        if (metadata == null) {
            sendError(
                    ctx,
                    HttpResponseStatus.SERVICE_UNAVAILABLE,
                    "model '" + model.getModelName() + "' has no metadata yet: its handler writes it when a"
                            + " worker loads the model");
        } else {
            NettyUtils.sendJsonResponse(ctx, metadata, HttpResponseStatus.OK);
        }
    }

    private static void sendError(ChannelHandlerContext ctx, HttpResponseStatus status, String message) {
        JsonObject body = new JsonObject();
        body.addProperty("error", message);
        body.addProperty("code", status.code());
        send(ctx, status, body);
    }

    private static void send(ChannelHandlerContext ctx, HttpResponseStatus status, JsonObject body) {
        NettyUtils.sendJsonResponse(ctx, body.toString(), status);
    }
}
