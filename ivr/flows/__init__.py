"""The flow language: what operators write, and what it means once loaded.

    model        typed flow objects shared by every node (prompts, intents, settings)
    nodes        the node kinds, one module each (their YAML, schema, checks, drawing),
                 and the table the loader, checker and diagrams read
    schema       the JSON Schema of flow files, made from its base and each node kind
    yamlsource   YAML with the line and column of every value
    loader       a flow file -> a Flow, or every problem with file:line:column
    checker      graph checks and the time each destination costs a caller
    prompts      menu announcements and how long prompts take to say
    templates    `{{ caller.first_name }}` in prompts, conditions and values
    hours        business hours and holidays
    directory    who is calling: caller directories (CSV or SQL)
    registry     the flows a server runs, reloaded when their files change
    intents      each flow's intent matcher (speech.intents), built once
    diagram      Mermaid and Graphviz drawings for review

Nothing here imports from the engine, the web server, the command line or callbacks.
"""
