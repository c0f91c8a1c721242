# connectivity_exporter container image.
#   docker build -t connectivity-exporter .
#   docker run -p 9816:9816 -v $PWD/config.yml:/etc/connectivity_exporter/config.yml:ro connectivity-exporter
# The config is read from /etc/connectivity_exporter/config.yml; mount yours there.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[fast]"

FROM python:3.11-slim
RUN useradd --system --uid 65532 --no-create-home --shell /usr/sbin/nologin exporter
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "connectivity-exporter[fast]" && rm -rf /wheels
COPY config.example.yml /etc/connectivity_exporter/config.yml
USER 65532:65532
EXPOSE 9816
ENTRYPOINT ["connectivity-exporter"]
CMD ["--config.file=/etc/connectivity_exporter/config.yml"]
