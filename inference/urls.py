from django.urls import path, re_path

from inference import messages_api, pages, usage_api, views

urlpatterns = [
    path("v1/models", views.ModelListView.as_view(), name="v1-models"),
    # Model ids contain a slash (cortensor/llama-3.1-8b).
    re_path(
        r"^v1/models/(?P<model_id>[A-Za-z0-9._:/-]{1,128})$",
        views.ModelDetailView.as_view(),
        name="v1-model",
    ),
    path("v1/chat/completions", views.ChatCompletionsView.as_view(), name="v1-chat-completions"),
    path("v1/completions", views.CompletionsView.as_view(), name="v1-completions"),
    path("v1/usage", usage_api.UsageApi.as_view(), name="api-usage"),
    # Anthropic's Messages API: the same pipeline, its other face.
    path("v1/messages", messages_api.MessagesView.as_view(), name="v1-messages"),
    path(
        "v1/messages/count_tokens",
        messages_api.CountTokensView.as_view(),
        name="v1-messages-count-tokens",
    ),
]

# The docs and playground pages: the same pipeline, driven from the browser.
urlpatterns += [
    path("docs", pages.docs_page, name="docs"),
    path("playground", pages.playground_page, name="playground"),
    path("playground/chat", pages.playground_chat, name="playground-chat"),
]
